"""Shareable trained models: ``ghostnest export RUN --format hub --out DIR`` writes the folder timm's hub loader
reads, so ``timm.create_model("local-dir:DIR", pretrained=True)`` (or ``hf-hub:USER/REPO`` once uploaded) builds the
trained network with its labels and preprocessing.

The folder holds what timm's own ``save_for_hf`` writes, ``config.json`` (architecture, class count, label names,
the model options as ``model_args`` and the pretrained cfg with the run's input size and mean/std) and
``model.safetensors``, plus a ``README.md`` model card made with timm's ``generate_readme`` from the run (model and
paper, recipe, data, the test accuracy beside the paper's, how to load it, license). ghostnest's own facts of the run
(data set, recipe, results) sit under the ``ghostnest`` key of ``config.json``; ``ghostnest eval``/``predict``/
``export`` and ``ghostnest.create_model(name, pretrained=DIR)`` read the folder wherever they take a run
(:mod:`ghostnest.weights`). The folder is written beside ``DIR`` and renamed into place: a failed export leaves
nothing. Uploading is the hub client's job (docs/timm.md).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .modelfile import METADATA_KEY
from .weights import HUB_CARD, HUB_CONFIG, HUB_WEIGHTS

LICENSE = "mit"  # the code's license (pyproject.toml); the weights are the user's training of it


def _results(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return {}


def _paper_rows(model: str, dataset: str | None) -> list:
    from .report.paper import PAPER_ROWS, PAPER_TABLES, norm_dataset

    return [r for r in PAPER_ROWS if r.model == model and PAPER_TABLES[r.table].dataset == norm_dataset(dataset)]


def model_card(model, meta: dict, results: dict, name: str) -> str:
    """The README.md of a hub folder for ``model`` trained as ``meta``/``results`` say (timm's ``generate_readme``
    with the sections it takes: description, details, usage, comparison)."""
    from timm.models._hub import generate_readme

    from .registry import model_info
    from .stats import count_flops, count_params

    cfg, info = model.pretrained_cfg, model_info(meta["model"])
    size = int(meta["input_size"])
    dataset = meta.get("dataset") or "unknown"
    top1 = results.get("test_top1")
    details = {
        "Model Type": "Image classification / feature backbone",
        "Model Stats": {"Params (M)": f"{count_params(model) / 1e6:.2f}",
                        "GMACs": f"{count_flops(model, size) / 2e9:.3f}", "Image size": f"{size} x {size}"},
        "Papers": {cfg.get("paper_name", info.family): cfg.get("origin_url") or "(report, no public link)"},
        "Dataset": dataset,
        "Recipe": meta.get("recipe") or "unknown",
        "Training code": "ghostnest (`ghostnest train`)",
    }
    if meta.get("model_kwargs"):
        details["Model options"] = json.dumps(meta["model_kwargs"])
    usage = (
        "```python\nimport timm\nimport ghostnest  # registers the ghostnest architectures with timm\n\n"
        f'model = timm.create_model("local-dir:{name}", pretrained=True).eval()  # or "hf-hub:USER/REPO" uploaded\n'
        "data = timm.data.resolve_data_config({}, model=model)  # the run's input size and mean/std\n"
        "transform = timm.data.create_transform(**data)\n```\n\n"
        f"With ghostnest: `ghostnest.create_model(\"{meta['model']}\", pretrained=\"{name}\")`, "
        f"`ghostnest eval {name}`, `ghostnest predict {name} IMAGES`, "
        f"`timm.create_model(\"local-dir:{name}\", pretrained=True, features_only=True)` for a backbone.\n"
    )
    rows = ["| | top-1 (test) | parameters |", "| --- | ---: | ---: |",
            f"| this model (`{meta['model']}`, {dataset}, {size}x{size}) | "
            f"{f'{top1:.2f}%' if top1 is not None else 'not recorded'} | {count_params(model) / 1e6:.2f}M |"]
    for r in _paper_rows(meta["model"], dataset):
        rows.append(f"| paper: {r.label} | {r.top1:.1f}% | {r.params_m}M |")
    comparison = "\n".join(rows) + "\n"
    if len(rows) == 3:
        comparison += "\nThe paper reports no result for this model on this data set.\n"
    card = dict(
        license=LICENSE, tags=["image-classification", "timm", "ghostnest"],
        description=(f"A {info.family} model ({meta['model']}, {cfg.get('paper_name', '')}) trained with ghostnest "
                     f"on {dataset}, {meta['num_classes']} classes. The architecture is registered with timm by "
                     "`import ghostnest` (pip install ghostnest)."),
        details=details, usage=usage, comparison=comparison,
    )
    return generate_readme(card, meta["model"])


def export_hub(source: str | Path, out: str | Path) -> Path:
    """Write the hub folder ``out`` (``config.json``, ``model.safetensors``, ``README.md``) of the trained model in
    ``source`` (a run directory, checkpoint or hub folder); returns ``out``."""
    from timm.models import save_for_hf

    from .fileio import atomic_write_text
    from .train.checkpoint import load_checkpoint, resolve_checkpoint_path

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; pass a new --out folder for the hub export")
    if not Path(source).exists():
        raise ValueError(f"{source} is not a run directory or checkpoint: a hub folder shares a trained model "
                         "(train one with `ghostnest train`)")
    path = resolve_checkpoint_path(source)
    model, meta = load_checkpoint(path)
    size = int(meta["input_size"])
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        extra = {k: meta.get(k) for k in ("dataset", "recipe")}
        extra["results"] = _results(path.parent)
        save_for_hf(
            model, str(tmp), safe_serialization=True,
            model_config={"label_names": list(meta["classes"]), METADATA_KEY: extra},
            model_args=dict(meta.get("model_kwargs") or {}),
            data_config={"input_size": (3, size, size), "mean": tuple(meta["mean"]), "std": tuple(meta["std"]),
                         "crop_pct": 1.0, "interpolation": "bicubic"},
        )
        atomic_write_text(tmp / HUB_CARD, model_card(model, meta, extra["results"], out.name))
        if not all((tmp / f).is_file() for f in (HUB_CONFIG, HUB_WEIGHTS, HUB_CARD)):
            raise OSError(f"hub export to {out} did not write {HUB_CONFIG}, {HUB_WEIGHTS} and {HUB_CARD}")
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
