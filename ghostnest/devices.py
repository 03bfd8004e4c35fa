"""Device selection, shared by training, evaluation and benchmarking."""
from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available, else CPU; ``cpu``, ``cuda`` or ``cuda:N`` as given. ``ValueError`` naming the
    fix for an unknown name, or for CUDA on a machine without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"--device {name!r}: accepted values: auto, cpu, cuda, cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"--device {name}: no CUDA device is available here (torch {torch.__version__}, cuda build: "
            f"{torch.version.cuda or 'no'}); use --device cpu (or auto)"
        )
    return torch.device(name)
