"""onnxruntime timing: ``InferenceSession`` objects timed with the same interleaved protocol as the torch models.

:func:`bench_sessions` times sessions built by the caller (e.g. an fp32 and an int8 export of one model) on given
inputs; :func:`onnxruntime_case` is what ``bench_models(runtime="onnxruntime")`` uses to time, beside a torch
model, its own ONNX export. Only the CPU is timed here (onnxruntime's ``CPUExecutionProvider``) and no memory is
measured (``mem_kind="not measured"``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .checks import check_positive
from .loop import Case, case_rows, first_call, interleave


def _array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().contiguous().cpu().numpy()
    return np.ascontiguousarray(value)


def session_feed(session, inputs) -> dict[str, np.ndarray]:
    """The ``input_feed`` for ``session.run``: ``inputs`` is a mapping input name -> array (numpy or CPU tensor),
    or one array for the session's first input."""
    if isinstance(inputs, Mapping):
        return {name: _array(value) for name, value in inputs.items()}
    return {session.get_inputs()[0].name: _array(inputs)}


def session_step(session, inputs) -> Callable[[], None]:
    """A step that runs ``session`` (an ``onnxruntime.InferenceSession``) once on ``inputs`` (see :func:`session_feed`);
    the inputs are converted once, beforehand, so the step times onnxruntime alone."""
    feed = session_feed(session, inputs)

    def step() -> None:
        session.run(None, feed)

    return step


def session_case(name: str, session, inputs, extra: dict | None = None, channels_last: bool = False) -> Case:
    """A :class:`~ghostnest.bench.loop.Case` timing ``session`` on ``inputs``, its first call already run."""
    return first_call(Case(name, session_step(session, inputs), channels_last, dict(extra or {})))


def bench_sessions(
    sessions: Sequence[tuple[str, object]],
    inputs,
    repeats: int = 10,
    warmup: int = 2,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Time ``(name, InferenceSession)`` pairs interleaved on the same ``inputs``; one row per pair, in order.

    ``inputs`` is one array (numpy or CPU tensor) for each session's first input, or a mapping input name ->
    array; its first dimension is the batch. Each session's first call runs alone (``first_call_ms``), then the
    remaining ``warmup - 1`` warm-up rounds and ``repeats`` timed rounds run round robin, as in ``bench_models``.
    Rows carry ``name``, ``runtime``, ``device``, ``batch``, the spread of the times (``median_ms``, ``p25_ms``,
    ``p75_ms``, ``iqr_ms``, ``min_ms``, ``max_ms``), ``images_per_s``, ``ratio_to_first``,
    ``min_ratio_to_first``, ``first_call_ms``, ``repeats``, ``warmup``, ``threads`` (torch's thread count; a
    session's own ``intra_op_num_threads`` is its builder's choice) and ``times_ms``.
    """
    sessions = list(sessions)
    if not sessions:
        raise ValueError("no session given; pass one or more (name, InferenceSession) pairs")
    check_positive(repeats=repeats, warmup=warmup)
    say = progress or (lambda _msg: None)
    first = inputs if not isinstance(inputs, Mapping) else next(iter(inputs.values()))
    batch = int(first.shape[0])
    cases = []
    for name, session in sessions:
        say(f"warming up {name}")
        cases.append(session_case(name, session, inputs))
    say(f"timing {len(cases)} session(s) x {repeats} rounds, interleaved")
    interleave(cases, warmup, repeats)
    return case_rows(cases, batch, repeats, warmup, {"runtime": "onnxruntime", "device": "cpu"})


def onnxruntime_case(case: Case, model: nn.Module, x: torch.Tensor, input_size: int,
                     say: Callable[[str], None]) -> Case:
    """The ONNX export of ``model`` (``case``'s network; fused for onnxruntime where ``case`` times the fused one)
    run by onnxruntime with torch's thread count, named ``NAME [onnxruntime]``, its first call already run."""
    import tempfile

    from ..export import export_model
    from ..modelfile import OnnxClassifier

    say(f"exporting {case.name} to ONNX")
    with tempfile.TemporaryDirectory() as tmp:
        path = export_model(model, "onnx", f"{tmp}/{case.name}.onnx", input_size, {"model": case.name})
        classifier = OnnxClassifier(path, threads=torch.get_num_threads())
    return session_case(f"{case.name} [onnxruntime]", classifier.session, x.float(), case.extra, case.channels_last)
