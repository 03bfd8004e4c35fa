"""Reading run directories written by ``ghostnest train`` (config.yaml, metrics.csv, results.json)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..train.config import config_to_dict
from ..train.metrics import MetricsError, read_metrics
from ..train.rundir import read_run_config

RESULTS_KEYS = ("model", "dataset", "params", "test_top1", "test_top5", "best_epoch", "epochs")


@dataclass
class Run:
    """What could be read from one run directory; ``problems`` says what could not."""

    path: Path
    name: str = ""
    model: str | None = None
    dataset: str | None = None
    num_classes: int | None = None
    recipe: str | None = None
    config: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    results: dict | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.results is not None

    @property
    def test_top1(self) -> float | None:
        return self.results["test_top1"] if self.results else None

    @property
    def best_val(self) -> tuple[float, int] | None:
        """Best val top-1 in metrics.csv and its epoch (None without readable val accuracies)."""
        vals = [(m["val_top1"], m["epoch"]) for m in self.metrics if m["val_top1"] is not None]
        return max(vals, key=lambda v: (v[0], -v[1])) if vals else None  # earliest epoch on a tie


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} is {value!r}, not a finite number")
    return float(value)


def _read_config(run: Run) -> None:
    """``run.config`` etc. from config.yaml, read by the trainer's own reader (:func:`read_run_config`)."""
    if not (run.path / "config.yaml").is_file():
        run.problems.append("config.yaml missing")
        return
    try:
        cfg = read_run_config(run.path)
    except (ValueError, OSError) as exc:
        run.problems.append(str(exc).replace(f"{run.path / 'config.yaml'}", "config.yaml", 1))
        return
    run.config = config_to_dict(cfg)
    run.model, run.dataset, run.num_classes, run.recipe = cfg.model, cfg.dataset, cfg.num_classes, cfg.recipe


def _read_metrics(run: Run) -> None:
    path = run.path / "metrics.csv"
    if not path.is_file():
        run.problems.append("metrics.csv missing")
        return
    try:
        run.metrics = read_metrics(path)
    except MetricsError as exc:
        run.problems.append(str(exc))
        return
    if not run.metrics:
        run.problems.append("metrics.csv has no epochs yet")


def _read_results(run: Run) -> None:
    path = run.path / "results.json"
    if not path.is_file():
        return  # unfinished run: no test accuracy, said in the table
    try:
        res = json.loads(path.read_text())
        if not isinstance(res, dict):
            raise ValueError("not a JSON object")
        missing = [k for k in RESULTS_KEYS if k not in res]
        if missing:
            raise ValueError(f"missing key(s) {', '.join(missing)}")
        for key in ("test_top1", "test_top5"):
            if not 0 <= _number(res[key], key) <= 100:
                raise ValueError(f"{key}={res[key]} is not a percentage")
        _number(res["params"], "params")
    except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
        run.problems.append(f"results.json unusable ({str(exc).splitlines()[0]})")
        return
    run.results = res
    if run.model is None and isinstance(res["model"], str):
        run.model = res["model"]
    elif run.model is not None and res["model"] != run.model:
        run.problems.append(f"results.json is for model {res['model']!r}, config.yaml for {run.model!r}")
    if run.dataset is None and isinstance(res["dataset"], str):
        run.dataset = res["dataset"]


def load_run(path: str | Path) -> Run:
    """Read one run directory; what is missing or corrupt is listed in ``Run.problems``, never raised."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"run directory {str(path)!r} does not exist; pass directories written by `ghostnest train`")
    run = Run(path=path, name=path.resolve().name)
    _read_config(run)
    _read_metrics(run)
    _read_results(run)
    return run


def mixing(config: dict) -> bool | None:
    """Whether a run's resolved config trains with CutMix/Mixup: True/False, or None if it does not say.

    Reads the two keys ``ghostnest train`` writes (:class:`ghostnest.train.config.TrainConfig`): ``mixup_alpha`` and
    ``cutmix_alpha``, where 0 turns each off. ``mixup_p`` (MixUp's share when both are on) does not decide.
    """
    alphas = [config.get(key) for key in ("mixup_alpha", "cutmix_alpha") if key in config]
    numbers = [a for a in alphas if isinstance(a, (int, float)) and not isinstance(a, bool)]
    if not numbers:
        return None
    return any(a > 0 for a in numbers)
