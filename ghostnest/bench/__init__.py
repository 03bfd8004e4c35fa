"""Speed benchmarks: latency, throughput and peak memory of models, runtimes and input pipelines.

One job per module:

- :mod:`.timing`: torch model timing, :func:`bench_models` (models by name) and :func:`bench_variants`
  (prebuilt models), behind ``ghostnest bench``;
- :mod:`.loop`: the interleaved timing protocol (first call alone, then round-robin rounds) and result rows;
- :mod:`.step`: what one timed step is (:func:`prepare_model`, :func:`make_step`);
- :mod:`.memory`: the CUDA and ``/proc`` peak-memory probe (:class:`PeakMemory`);
- :mod:`.runtimes`: onnxruntime timing (:func:`bench_sessions`, :func:`session_step`);
- :mod:`.data`: input-pipeline timing, :func:`bench_data` (``ghostnest bench --data RECIPE``);
- :mod:`.env`: where a benchmark ran (:func:`environment`, :func:`cpu_model`);
- :mod:`.format`: plain-text tables (:func:`format_table`, :func:`format_data`);
- :mod:`.command`: what ``ghostnest bench`` asks for, checked (:func:`bench_command`);
- :mod:`.model_files`: exported ONNX files (fp32, int8) in onnxruntime beside PyTorch;
- :mod:`.checks` and :mod:`.summary`: argument checks, and the median/quartile spread of timings.
"""
from .checks import DTYPES, MODES, check_dtype
from .command import bench_command
from .data import bench_data
from .env import cpu_model, environment
from .format import format_data, format_table
from .loop import Case
from .memory import PeakMemory
from .runtimes import bench_sessions, session_step
from .step import make_step, prepare_model
from .summary import percentile, spread, spread_warning
from .timing import RESULT_KEYS, RUNTIMES, bench_models, bench_variants

__all__ = [
    "DTYPES", "MODES", "RESULT_KEYS", "RUNTIMES", "Case", "PeakMemory", "bench_command", "bench_data", "bench_models",
    "bench_sessions", "bench_variants", "check_dtype", "cpu_model", "environment", "format_data", "format_table",
    "make_step", "percentile", "prepare_model", "session_step", "spread", "spread_warning",
]
