"""Model files and the metadata they carry: the one key, its reader for every format, and running an ONNX file.

Every file ghostnest writes a model into holds one JSON document of metadata under the key :data:`METADATA_KEY`
(model name, class names, input size, mean and std, ...): a training checkpoint and an exported safetensors file in
the safetensors header, an ONNX file in its ``metadata_props``, a ``torch.export`` archive in an extra file. This
module owns that key, reads it back from any of the formats (:func:`read_metadata`), writes it into an ONNX model
(:func:`set_onnx_metadata`), and runs an exported ONNX classifier (:class:`OnnxClassifier`). It imports no other
ghostnest module, so training (``ghostnest eval --model-file``), export and the benchmarks all use it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

METADATA_KEY = "ghostnest"  # metadata is one JSON document under this key in every format


def safetensors_metadata(path: str | Path) -> str | None:
    """The raw JSON text under :data:`METADATA_KEY` in a safetensors file's header (``None`` if there is none);
    the library's own exception for a file that is not safetensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get(METADATA_KEY)


def read_metadata(path: str | Path) -> dict:
    """The metadata of an ONNX, ``.pt2`` or safetensors model file (``ValueError`` if unreadable or absent)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        if path.suffix == ".onnx":
            import onnx

            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            raw = props.get(METADATA_KEY)
        elif path.suffix == ".pt2":
            extra = {METADATA_KEY: ""}
            torch.export.load(str(path), extra_files=extra)
            raw = extra[METADATA_KEY] or None
        else:
            raw = safetensors_metadata(path)
        if raw is None:
            raise KeyError(METADATA_KEY)
        return json.loads(raw)
    except KeyError:
        raise ValueError(f"{path} has no ghostnest metadata; export it with `ghostnest export`") from None
    except Exception as exc:  # protobuf, zip and JSON decoders each raise their own error types
        raise ValueError(f"{path} is not a readable exported model ({exc.__class__.__name__}: {exc})") from None


def set_onnx_metadata(proto, metadata: dict | str) -> None:
    """Put ``metadata`` (a dict, or its JSON text) into ONNX model ``proto`` under :data:`METADATA_KEY`, replacing
    any metadata it held."""
    text = metadata if isinstance(metadata, str) else json.dumps(metadata, sort_keys=True)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, text


class OnnxClassifier:
    """An exported ONNX classifier (fp32 or int8) run by onnxruntime on the CPU: ``logits = OnnxClassifier(path)(x)``.

    A corrupt file, one without ghostnest metadata or one onnxruntime cannot load is a ``ValueError``. A file
    exported with a fixed batch size takes any number of images (split and padded to its batch).
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        self.metadata = read_metadata(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unloadable graphs
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise ValueError(f"{path}: onnxruntime cannot load it ({first})") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    @property
    def int8(self) -> bool:
        """Whether this is an int8 (``ghostnest export --int8``) file."""
        return "int8" in self.metadata

    def eval(self) -> OnnxClassifier:  # the evaluation loop calls model.eval(); inference only, nothing to switch
        return self

    def _run(self, x):
        return self.session.run(None, {self.input_name: x})[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float().contiguous().cpu().numpy()
        b = self.fixed_batch
        if b is None or len(x) == b:
            return torch.from_numpy(self._run(x))
        import numpy as np

        outs = []
        for i in range(0, len(x), b):
            chunk = x[i:i + b]
            pad = b - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            outs.append(self._run(chunk)[:b - pad])
        return torch.from_numpy(np.concatenate(outs))
