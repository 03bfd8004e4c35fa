"""Model families, one file each. Importing this package registers every model by name."""
from . import ghostmixnet  # noqa: F401  (registration order is listing order)
from . import menest  # noqa: F401, I001
from . import efficientnetv2  # noqa: F401, I001
# the ME-NeSt-Ghost paper's future work (section 6): self-attention, ResNet-style, and the modern baselines
from . import menest_tsa  # noqa: F401, I001
from . import menest_resnet  # noqa: F401, I001
from . import convnext  # noqa: F401, I001
from . import coatnet  # noqa: F401, I001
