"""Data-parallel training with PyTorch's own engine, and the stop signals a cluster sends.

``torchrun --nproc_per_node N -m ghostnest train ...`` starts N copies of the training command; torchrun sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and :func:`setup` joins them into
one process group: ``nccl`` on GPUs (one GPU per process, ``cuda:LOCAL_RANK``), ``gloo`` on CPU. Without those
variables training runs in one process, as before. See docs/distributed.md.

- The recipe's ``batch_size`` is the **global** batch: each of the N ranks takes ``batch_size / N`` images of every
  step. :class:`ShardedBatches` deals them out with ``DistributedSampler`` (re-seeded every epoch with
  ``set_epoch``, from the run's seed and the epoch), so the union of the ranks' batch *i* is exactly the
  one-process batch *i*.
- Small control messages (the stop flag, metric sums, RNG states) travel on a CPU ``gloo`` group, so reading them
  never stalls the GPU stream.
- :class:`StopRequest` turns SIGTERM (a preempted cluster job) and SIGINT (Ctrl-C) into a flag that the loop reads
  at step boundaries; all ranks agree on it before acting.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from ..data.loader import TrainBatches
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


class ShardedBatches(TrainBatches):
    """This rank's share of every global training batch, deterministic in the epoch's seed.

    ``DistributedSampler(num_replicas=world, rank=rank)`` shuffles one order per epoch (``set_epoch(seed)``: the
    permutation is ``randperm`` seeded with ``seed``, the same on every rank) and deals it out round-robin, so the
    ranks' batch *i* together hold exactly the images of the one-process batch *i* of ``global_batch`` images, at
    any world size (one process is the ``world=1`` case, with the order of :class:`TrainBatches`).
    """

    def __init__(self, split, sizes, global_batch: int, augment, workers: int, device: torch.device,
                 rank: int = 0, world: int = 1):
        if global_batch % world:
            raise ValueError(f"batch_size={global_batch} is the global batch and must divide evenly over the "
                             f"{world} processes; choose a multiple of {world} (e.g. --set batch_size="
                             f"{max(world, global_batch // world * world)})")
        super().__init__(split, sizes, global_batch // world, augment, workers, device)
        self.drop_last = len(split) >= global_batch
        self.rank, self.world = rank, world
        self.sampler = DistributedSampler(range(len(split)), num_replicas=world, rank=rank, shuffle=True, seed=0,
                                          drop_last=self.drop_last)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, seed: int, loader_seed: int = 0, skip: int = 0):
        """The epoch shuffled by ``seed``, from batch ``skip`` on (a resumed epoch); ``loader_seed`` seeds workers."""
        self.sampler.set_epoch(seed)
        if self.dataset is None:  # slices of this rank's index list, moved to the device once
            order = torch.tensor(list(self.sampler), device=self.device)
            for i in range(skip, len(self)):
                idx = order[i * self.batch_size:(i + 1) * self.batch_size]
                yield self.images[idx], self.labels[idx]
            return
        batches = list(BatchSampler(list(self.sampler), self.batch_size, self.drop_last))
        # Worker processes draw their augmentation from seeds fixed when the loader starts, so a resumed epoch
        # re-draws (and drops) the batches before ``skip`` to line them up. Without workers the augmentation draws
        # from the main process's RNG, which resume restores, so the skipped batches are simply left out.
        loader = DataLoader(self.dataset, batch_sampler=batches if self.workers else batches[skip:],
                            num_workers=self.workers, generator=torch.Generator().manual_seed(loader_seed),
                            pin_memory=self.device.type == "cuda")
        for i, (images, labels) in enumerate(loader):
            if self.workers and i < skip:
                continue
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


class StopRequest:
    """SIGTERM / SIGINT -> ``self.signum``; the loop saves at the next step boundary and returns.

    A second SIGINT (Ctrl-C twice) stops at once with ``KeyboardInterrupt``, keeping the last checkpoint.
    Handlers are installed only in the main thread and restored on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def requested(self, d: Dist) -> bool:
        """Has any rank been signalled? (a collective when distributed: every rank calls it at the same steps)"""
        if d.enabled:
            agreed = int(d.max(float(self.signum or 0)))
            if agreed:
                self.signum = agreed
            return agreed > 0
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "SIGTERM"
