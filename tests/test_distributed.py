"""Data-parallel training on CPU (gloo): two ranks stay identical and equal one process with the same global
batch; torchrun runs the real command with only rank 0 writing; a checkpoint resumes at another world size; a rank
that dies takes the others down instead of leaving them hanging."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import group_norm_instead_of_batch_norm

from ghostnest import create_model
from ghostnest.train import checkpoint as ckpt
from ghostnest.train import resolve_config, train, trainer
from ghostnest.train.distributed import child_pids, free_port, torchrun_train_command

TINY = {"widths": [8, 16, 16], "stem_width": 8, "depths": [1, 1, 1], "pool_size": 1, "drop_rate": 0.0}
TINY_SET = "model_kwargs={widths: [8, 16, 16], stem_width: 8, depths: [1, 1, 1], pool_size: 1}"
CREATE_MODEL = trainer.create_recipe_model


def config(**extra):
    base = {"recipe": "tiny", "model": "ghostmixnet", "model_kwargs": TINY,
            "dataset": "fake:classes=4,size=16,train=96,test=32", "val_fraction": 0.25, "workers": 0,
            "epochs": 2, "batch_size": 16, "lr": 3e-3, "weight_decay": 1e-3, "label_smoothing": 0.1, "threads": 1}
    return resolve_config({**base, **extra})


def rows(run):
    with open(Path(run) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _capture_models(exact: bool) -> list:
    """Patch the trainer's model factory to keep (and optionally de-BatchNorm) the model it trains."""
    built = []

    def create(*args, **kwargs):
        model = CREATE_MODEL(*args, **kwargs)
        built.append(group_norm_instead_of_batch_norm(model) if exact else model)
        return model

    trainer.create_recipe_model = create
    return built


def _rank_worker(rank: int, out: str, port: int) -> None:
    """One of two ranks: joins a gloo group (the caller-made-group path of ``setup``) and trains twice."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        try:
            train(config(sync_bn=True), Path(out) / "syncbn", device="cpu", progress=False)
        except ValueError as exc:  # refused before anything is written
            (Path(out) / f"syncbn-rank{rank}.txt").write_text(str(exc))
        for name, exact in (("exact", True), ("batchnorm", False)):
            built = _capture_models(exact)
            train(config(), Path(out) / name, device="cpu", progress=False)
            if rank == 1:  # (rank 0 ends by loading best.safetensors for the test set; its last.* are on disk)
                torch.save(built[-1].state_dict(), Path(out) / f"{name}-rank{rank}.pt")
        # gradient accumulation (no_sync until the last micro-batch) and a weight EMA on every rank
        _capture_models(True)
        train(config(accum_steps=2, ema_decay=0.9), Path(out) / "options", device="cpu", progress=False)
        _capture_models(False)
        # quantization-aware training: every rank on rank 0's activation ranges (DDP broadcasts the observers'
        # buffers), so a resumed run repeats the uninterrupted one
        train(config(qat=True), Path(out) / "qat", device="cpu", progress=False)
        train(config(qat=True), Path(out) / "qat-part", device="cpu", progress=False, stop_after=1)
        train(None, resume=Path(out) / "qat-part", device="cpu", progress=False)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_rank_worker, args=(str(out), free_port()), nprocs=2, start_method="spawn")
    return out


def test_bad_distributed_input_is_one_line(two_ranks, monkeypatch, capsys, tmp_path):
    for rank in (0, 1):
        assert "sync_bn=true needs GPUs" in (two_ranks / f"syncbn-rank{rank}.txt").read_text()
    assert not (two_ranks / "syncbn").exists()
    monkeypatch.setenv("RANK", "0")  # as torchrun would start it, on a machine without a GPU
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    from ghostnest.cli import main

    assert main(["train", "--device", "cuda", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --device cuda: no CUDA device") and "\n" not in err
    assert not (tmp_path / "run").exists()


def last_weights(run):
    return ckpt.read_checkpoint(Path(run) / "last.safetensors")[0]


def test_qat_on_two_ranks_resumes_exactly(two_ranks):
    full, part = two_ranks / "qat", two_ranks / "qat-part"
    assert torch.load(part / "last.state.pt", weights_only=True)["qat_observers"]  # the ranges are kept
    assert [r["train_loss"] for r in rows(full)] == [r["train_loss"] for r in rows(part)]
    a, b = last_weights(full), last_weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_ranks_equal_one_process_with_the_same_global_batch(two_ranks, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "create_recipe_model", lambda *a, **k: group_norm_instead_of_batch_norm(CREATE_MODEL(*a, **k)))
    train(config(), tmp_path / "one", device="cpu", progress=False)  # 1 process, batch 16 vs 2 ranks x 8
    one = last_weights(tmp_path / "one")
    r0 = last_weights(two_ranks / "exact")  # rank 0 writes; rank 1 kept its own copy
    r1 = torch.load(two_ranks / "exact-rank1.pt", weights_only=True)
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # DDP keeps the replicas bit-identical
    torch.manual_seed(0)  # the run's seed: its initial weights
    init = group_norm_instead_of_batch_norm(create_model("ghostmixnet", num_classes=4, **TINY)).state_dict()
    moved = max((r0[k] - init[k]).abs().max().item() for k in r0)
    diff = max((r0[k] - one[k]).abs().max().item() for k in r0)
    assert moved > 1e-3 and diff < 1e-5, (moved, diff)  # trained, and the same training as one process
    a, b = rows(tmp_path / "one"), rows(two_ranks / "exact")
    assert [r["epoch"] for r in b] == ["1", "2"]
    for key in ("train_loss", "val_loss", "val_top1"):  # metrics reduced over the ranks = the one-process ones
        assert [float(r[key]) for r in b] == pytest.approx([float(r[key]) for r in a], rel=1e-5), key
    res = json.loads((two_ranks / "exact" / "results.json").read_text())
    assert res["world_size"] == 2 and res["global_batch"] == 16


def test_accumulation_and_ema_on_two_ranks_equal_one_process(two_ranks, tmp_path, monkeypatch):
    """2 ranks x 2 micro-batches of 4 (gradients all-reduced once per step) train as 1 process x one batch of 16,
    and the EMA every rank keeps is the one-process EMA."""
    monkeypatch.setattr(trainer, "create_recipe_model", lambda *a, **k: group_norm_instead_of_batch_norm(CREATE_MODEL(*a, **k)))
    train(config(ema_decay=0.9), tmp_path / "one", device="cpu", progress=False)
    a = torch.load(tmp_path / "one" / "last.state.pt", weights_only=True)
    b = torch.load(two_ranks / "options" / "last.state.pt", weights_only=True)
    for key in ("model", "ema"):
        diff = max((a[key][k] - b[key][k]).abs().max().item() for k in a[key])
        assert diff < 1e-5, (key, diff)
    for key in ("train_loss", "val_top1", "ema_val_loss", "ema_val_top1"):
        assert [float(r[key]) for r in rows(two_ranks / "options")] == pytest.approx(
            [float(r[key]) for r in rows(tmp_path / "one")], rel=1e-5), key


def test_batchnorm_replicas_stay_identical(two_ranks):
    r0 = last_weights(two_ranks / "batchnorm")
    r1 = torch.load(two_ranks / "batchnorm-rank1.pt", weights_only=True)
    assert any("running_mean" in k for k in r0)
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # weights and BatchNorm statistics


def test_ranks_share_each_global_batch_exactly():
    from ghostnest.data import load_dataset
    from ghostnest.data.loader import TrainBatches

    split = load_dataset("fake:classes=4,size=8,train=50,test=8").train
    split.labels = torch.arange(len(split))  # a batch's labels name its images
    one = TrainBatches(split, (), 12, None, 0, torch.device("cpu"))
    ranks = [TrainBatches(split, (), 12, None, 0, torch.device("cpu"), rank=r, world=3) for r in range(3)]
    assert len(one) == 4 and [len(b) for b in ranks] == [4, 4, 4]
    for epoch in (5, 6):
        whole = [y.tolist() for _, y in one.epoch(epoch)]
        parts = [[y.tolist() for _, y in b.epoch(epoch)] for b in ranks]
        assert all(len(p[i]) == 4 for p in parts for i in range(4))
        assert [sorted(sum((p[i] for p in parts), [])) for i in range(4)] == [sorted(w) for w in whole]
        assert [y.tolist() for _, y in ranks[1].epoch(epoch, skip=3)] == parts[1][3:]  # a resumed epoch
    assert whole != [y.tolist() for _, y in one.epoch(5)]  # a new seed, a new order
    old = torch.randperm(50, generator=torch.Generator().manual_seed(6))  # TrainBatches' order, one process
    assert whole == [old[i * 12:(i + 1) * 12].tolist() for i in range(4)]
    with pytest.raises(ValueError, match="batch_size=12 is the global batch and must divide evenly over the 5"):
        TrainBatches(split, (), 12, None, 0, torch.device("cpu"), rank=0, world=5)


DEADLINE = 600  # seconds: generous, for a loaded machine; the tests wait on events, never for a fixed time


def torchrun(*args, nproc=2):
    return torchrun_train_command(list(args), nproc)


TRAIN_ARGS = ["--set", TINY_SET, "--set", "dataset=fake:classes=4,size=16,train=96,test=32", "--set",
              "batch_size=16", "--set", "val_fraction=0.25", "--set", "workers=0", "--set", "threads=1",
              "--device", "cpu", "--quiet"]


def test_torchrun_cli_and_resume_at_another_world_size(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(torchrun(*TRAIN_ARGS, "--set", "epochs=2", "--out", str(run)), capture_output=True,
                       text=True, timeout=DEADLINE, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("test top-1") == 1  # one report, from rank 0
    assert sorted(x.name for x in run.iterdir()) == ["best.safetensors", "config.yaml", "curves.png",
                                                     "last.safetensors", "last.state.pt", "metrics.csv",
                                                     "results.json"]
    assert [r["epoch"] for r in rows(run)] == ["1", "2"]
    assert json.loads((run / "results.json").read_text())["world_size"] == 2
    state = torch.load(run / "last.state.pt", weights_only=True)
    assert state["world_size"] == 2 and state["epoch"] == 2
    # written by 2 ranks, continued by 1 process (batch 16 = 1 x 16 now)
    res = train(None, resume=run, device="cpu", progress=False, resume_epochs=3)
    assert res["world_size"] == 1 and [r["epoch"] for r in rows(run)] == ["1", "2", "3"]


def wait_until(condition, proc, what: str) -> None:
    """Poll ``condition`` until it holds; fail if ``proc`` exits first or ``DEADLINE`` passes."""
    deadline = time.time() + DEADLINE
    while not condition():
        assert proc.poll() is None, f"{what}: exited early\n{proc.communicate()[1][-2000:]}"
        assert time.time() < deadline, what
        time.sleep(0.05)


def test_a_dead_rank_stops_the_others(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        torchrun(*TRAIN_ARGS, "--set", "dataset=fake:classes=4,size=16,train=1500,test=32", "--set", "epochs=50",
                 "--out", str(run)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        # a loaded machine may take minutes to start two ranks: wait for the event (the first checkpoint) with a
        # generous deadline, and then for the ranks themselves, not for a fixed time
        wait_until(lambda: (run / "last.state.pt").exists() and len(child_pids(proc.pid)) == 2, proc,
                   "training did not start")
        os.kill(child_pids(proc.pid)[-1], signal.SIGKILL)  # one rank dies without a word
        t0 = time.time()
        _, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the others stop long before dist_timeout (600 s): they see the closed connection, or torchrun stops them
    assert proc.returncode != 0 and time.time() - t0 < 300
    assert "lost contact with the other processes" in err or "closing signal SIGTERM" in err, err[-2000:]
    state = torch.load(run / "last.state.pt", weights_only=True)  # the checkpoint survived
    assert state["epoch"] >= 1


@pytest.mark.filterwarnings("ignore::FutureWarning")  # gc.get_objects() meets torch.distributed's deprecated reduce_op
def test_the_ddp_wrapper_is_freed_before_the_process_group(tmp_path, monkeypatch):
    """A run under torchrun's environment (one rank, gloo, in this process): when the process group is destroyed no
    DistributedDataParallel wrapper is alive any more. Freed after it, the wrapper's Reducer drops the last reference
    to the destroyed group, whose destructor joins gloo's threads while holding the GIL one of them waits for, and
    the rank never exits (seen under torch 2.11 in one run of three of the torchrun test above)."""
    import gc

    from torch.nn.parallel import DistributedDataParallel

    from ghostnest.train.distributed import Dist

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    alive, close = [], Dist.close

    def checked_close(self):
        alive.append(sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects()))
        close(self)

    monkeypatch.setattr(Dist, "close", checked_close)
    res = train(config(epochs=1), tmp_path / "run", device="cpu", progress=False)
    assert res["world_size"] == 1 and not dist.is_initialized()
    assert alive == [0]
