"""Model families, one file each. Importing this package registers every model by name."""
from . import ghostmixnet  # noqa: F401  (registration order is listing order)
from . import menest  # noqa: F401, I001
from . import efficientnetv2  # noqa: F401, I001
