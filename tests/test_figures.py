"""Figures a person can read: the confusion matrix at 10 and 100 classes, curves of a one-epoch run, and the run's
own curves.png carrying the test top-1."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from ghostnest.figures import most_confused, plot_confusion
from ghostnest.train.metrics import plot_curves


@pytest.fixture
def drawn(monkeypatch):
    """The figures saved during a test (matplotlib's savefig still runs)."""
    figures = []
    save = Figure.savefig

    def spy(self, *args, **kwargs):
        figures.append(self)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return figures


def labels(ax, axis="x"):
    ticks = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [t.get_text() for t in ticks]


def test_ten_classes_full_matrix_with_upright_names_and_a_colour_bar(tmp_path, drawn):
    m = np.diag(np.full(10, 30))
    m[3, 5] = 4
    plot_confusion(tmp_path / "c.png", m, [str(i) for i in range(10)], "digits")
    (fig,) = drawn
    ax, bar = fig.axes
    assert labels(ax) == [str(i) for i in range(10)] and labels(ax, "y") == [str(i) for i in range(10)]
    assert all(t.get_rotation() == 0 for t in ax.get_xticklabels())  # single digits stand upright
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class" and ax.get_title() == "digits"
    assert bar.get_ylabel() == "test images"
    assert {t.get_text() for t in ax.texts} == {"30", "4"}  # the counts, in their cells
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_hundred_classes_heat_map_beside_the_most_confused_pairs(tmp_path, drawn):
    rng = np.random.default_rng(0)
    m = np.diag(rng.integers(40, 95, 100))
    m[17, 42] = 9  # the worst pair
    m[3, 4] = 5
    names = [f"class_{i}" for i in range(100)]
    plot_confusion(tmp_path / "c.png", m, names, "cifar100")
    (fig,) = drawn
    heat, bars, colour = fig.axes
    assert labels(heat) == [str(i) for i in range(0, 100, 10)]  # every tenth index, not 100 unreadable names
    assert labels(bars, "y")[-1] == "class_17 \u2192 class_42" and colour.get_ylabel().startswith("% of the true")
    width, height = fig.get_size_inches() * 100
    assert width <= 1500 and height <= 700  # not a 3000x3000 canvas with 10-pt text


def test_most_confused_pairs_are_ordered_and_shared():
    m = np.array([[8, 2, 0], [0, 5, 5], [1, 0, 9]])
    pairs = most_confused(m, ["a", "b", "c"])
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("b", "c", 5), ("a", "b", 2), ("c", "a", 1)]
    assert pairs[0]["share"] == 50.0 and isinstance(pairs[0]["share"], float)
    assert most_confused(np.eye(3, dtype=int) * 4, ["a", "b", "c"]) == []


def test_one_epoch_curves_have_whole_epoch_ticks_and_the_test_line(tmp_path, drawn):
    row = {"epoch": 1, "lr": 1e-3, "train_loss": 1.0, "val_loss": 0.4, "val_top1": 92.4, "val_top5": 99.3}
    plot_curves(tmp_path / "c.png", [row], "one epoch", test_top1=98.9)
    (fig,) = drawn
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks == [1.0] and ax.get_xlabel() == "epoch" and ax.get_ylabel()
    assert "test top-1, best checkpoint (98.90%)" in labels_of_legend(fig.axes[1])


def labels_of_legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_the_runs_own_curves_show_the_test_top1(tmp_path, monkeypatch):
    import ghostnest.train.engine as engine
    from ghostnest.train import train
    from ghostnest.train.config import resolve_config

    calls = []
    monkeypatch.setattr(engine, "plot_curves", lambda path, rows, title, test_top1=None: calls.append(test_top1))
    cfg = resolve_config({"model_kwargs": {"widths": [8, 8, 8], "stem_width": 8, "depths": [1, 1, 1], "pool_size": 1},
                          "dataset": "fake:classes=4,size=16,train=64,test=16", "batch_size": 16,
                          "val_fraction": 0.25, "workers": 0, "epochs": 1, "threads": 1})
    res = train(cfg, out=tmp_path / "run", device="cpu", progress=False)
    assert calls[-1] == pytest.approx(res["test_top1"])  # the last drawing of curves.png has the test line
