"""The process group of data-parallel training (PyTorch's own DDP engine): who this process is and how ranks talk.

``torchrun --nproc_per_node N -m ghostnest train ...`` starts N copies of the training command; torchrun sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and :func:`setup` joins them into
one process group: ``nccl`` on GPUs (one GPU per process, ``cuda:LOCAL_RANK``), ``gloo`` on CPU. Without those
variables training runs in one process, as before. See docs/distributed.md.

- The recipe's ``batch_size`` is the **global** batch: each of the N ranks takes ``batch_size / N`` images of every
  step (:class:`ghostnest.data.loader.TrainBatches` deals them out).
- Small control messages (the stop flag, metric sums, RNG states) travel on a CPU ``gloo`` group, so reading them
  never stalls the GPU stream.
- Stop signals (SIGTERM, SIGINT) are handled in :mod:`.stop`.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from ..devices import resolve_device


@dataclass
class Dist:
    """Where this process stands: its rank among ``world`` processes, its device, and the groups it talks on."""

    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: one process, no process group
    owned: bool = False  # this module created the process group (and destroys it at the end)
    control: object = None  # CPU (gloo) group for flags and metric sums; the default group when that is gloo

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (float64, on the CPU control group)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, group=self.control)
        return t.tolist()

    def max(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return t.item()

    def gather(self, obj) -> list:
        """``obj`` of every rank, in rank order (all ranks take part; every rank gets the list)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj, group=self.control)
        return out

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) to every rank, as DDP does before each forward."""
        if self.enabled:
            for buf in model.buffers():
                dist.broadcast(buf, 0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(group=self.control)

    @contextlib.contextmanager
    def local_main_first(self):
        """Local rank 0 of each node runs the block first (a data download), the others after it has finished."""
        if self.local_rank != 0:
            self.barrier()
        yield
        if self.local_rank == 0:
            self.barrier()

    def close(self) -> None:
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()


def peer_failure(exc: BaseException) -> bool:
    """Is ``exc`` a collective that failed because a peer died, hung past the timeout or dropped the connection?"""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return any(k in text for k in ("connection closed", "connection reset", "timed out", "timeout", "nccl", "gloo"))


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: str = "auto", timeout_s: float = 600.0) -> Dist:
    """Join torchrun's process group (or use one the caller made); one process without either.

    ``timeout_s`` bounds every collective: a rank whose peer died or hangs raises instead of waiting forever
    (torchrun itself also stops the other ranks as soon as one exits with an error).
    """
    if not dist.is_initialized() and not launched_by_torchrun():
        return Dist(resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = resolve_device(device)
    if dev.type == "cuda":
        if dev.index is not None and int(os.environ.get("WORLD_SIZE", 1)) > 1:
            raise ValueError(f"--device {device}: under torchrun use --device cuda (or auto); each process takes "
                             "the GPU of its LOCAL_RANK (limit the GPUs with CUDA_VISIBLE_DEVICES)")
        if dev.index is None:
            if local_rank >= torch.cuda.device_count():
                raise ValueError(f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} GPU(s): "
                                 "start at most one process per GPU (torchrun --nproc_per_node)")
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    owned = False
    if not dist.is_initialized():
        if backend == "nccl" and not dist.is_nccl_available():
            raise ValueError("NCCL is not available in this PyTorch build, so GPUs cannot train together; "
                             "install a CUDA build of PyTorch, or use --device cpu (gloo)")
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        owned = True
    else:
        backend = dist.get_backend()
    control = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s)) if backend != "gloo" else None
    return Dist(dev, dist.get_rank(), dist.get_world_size(), local_rank, backend, owned, control)


# ------------------------------------------------------------ launching torchrun from Python (tests, gpu_check.py)
def torchrun_train_command(args: list[str], nproc: int = 1) -> list[str]:
    """The argv of ``torchrun --nproc_per_node nproc -m ghostnest train *args`` with this Python, on a free port."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
            str(free_port()), "-m", "ghostnest", "train", *args]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for ``MASTER_PORT``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc), in pid order: torchrun's workers, to signal one."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return sorted(out)
