"""Batches for training and evaluation, built for speed (airbench style).

- The whole uint8 data set sits on the device; a batch is an index into it. Conversion to float, the resize to the
  training resolution, normalisation and Mixup/CutMix are done per *batch* on the device.
- Only when a recipe asks for per-image augmentation (AutoAugment, RandAugment, ... which draw different random
  parameters per image) do batches come from a ``DataLoader`` whose workers run torchvision.transforms.v2 on the
  uint8 images; or, with ``augment_on: device``, the same v2 pipeline runs on the batch on the device
  (:class:`DeviceAugment`), for a GPU the CPU workers cannot keep fed.
- Every epoch's randomness (shuffle, per-image augmentation, mixing, dropout) is drawn from a generator seeded with
  ``(seed, epoch)``, so a run resumed at epoch k sees exactly the batches an uninterrupted run would have.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from .datasets import Split

# Per-image transforms a recipe may name (all torchvision.transforms.v2 classes; none re-implemented here).
AUGMENT_OPS = {
    "RandomCrop": v2.RandomCrop,
    "RandomResizedCrop": v2.RandomResizedCrop,
    "RandomHorizontalFlip": v2.RandomHorizontalFlip,
    "RandomPerspective": v2.RandomPerspective,
    "RandomPosterize": v2.RandomPosterize,
    "ColorJitter": v2.ColorJitter,
    "AutoAugment": v2.AutoAugment,
    "RandAugment": v2.RandAugment,
    "TrivialAugmentWide": v2.TrivialAugmentWide,
    "RandomErasing": v2.RandomErasing,
}
_POLICIES = {p.name.lower(): p for p in v2.AutoAugmentPolicy}


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's randomness: depends on (seed, epoch) only, so resumed runs repeat it exactly."""
    return (seed * 1_000_003 + epoch * 7919) % (2**63 - 1)


def epoch_seeds(seed: int, epoch: int, rank: int = 0) -> tuple[int, int, int]:
    """(shuffle order, loader workers, torch RNG) seeds of epoch ``epoch`` (0-based) on ``rank``, all from
    (seed, epoch, rank): training and ``ghostnest recipes preview`` draw the same batches from them."""
    base = epoch_seed(seed, epoch)
    return base + 1, base + 2 * rank + 1, base + 2 * rank


def train_val_split(split: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Seeded random train/validation split by fraction (ME-NeSt-Ghost, section 2: 95:5, 47,500 / 2,500 of
    CIFAR-100)."""
    n = len(split)
    n_val = int(round(n * val_fraction))
    if not 0 < n_val < n:
        raise ValueError(
            f"val_fraction={val_fraction} leaves {n_val} of {n} images for validation; choose a value in (0, 1) "
            "that keeps at least one image on each side, or set val_on_test=true"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return split.subset(perm[n_val:].sort().values), split.subset(perm[:n_val].sort().values)


def build_augment(ops: list[dict]) -> v2.Compose | None:
    """Turn a recipe's ``augment`` list (``[{op: Name, **kwargs}, ...]``) into a v2 pipeline on uint8 images."""
    if not ops:
        return None
    out = []
    for spec in ops:
        spec = dict(spec)
        name = spec.pop("op", None)
        if name not in AUGMENT_OPS:
            raise ValueError(f"unknown augment op {name!r}; accepted: {', '.join(AUGMENT_OPS)}")
        if "policy" in spec:
            if str(spec["policy"]).lower() not in _POLICIES:
                raise ValueError(f"unknown AutoAugment policy {spec['policy']!r}; accepted: {', '.join(_POLICIES)}")
            spec["policy"] = _POLICIES[str(spec["policy"]).lower()]
        for key in ("interpolation",):
            if key in spec:
                spec[key] = v2.InterpolationMode(spec[key])
        try:
            out.append(AUGMENT_OPS[name](**spec))
        except TypeError as exc:
            raise ValueError(f"augment op {name}: {exc}") from None
    return v2.Compose(out)


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic, antialiased resize of a float batch (the 32 -> 128 stand-in of ME-NeSt-Ghost,
    section 2, and 128 -> 256)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)


def resize_steps(stored: int, data_size: int, size: int) -> tuple[int, ...]:
    """The resizes between stored pixels and the model input: first to the data set's nominal size (cifar100_128:
    32 -> 128, the stand-in for the paper's super-resolved set), then to the training size (ME-NeSt-Ghost,
    section 4: 128 -> 256). Sizes equal to the previous one are skipped."""
    steps, cur = [], stored
    for s in (data_size, size):
        if s != cur:
            steps.append(s)
            cur = s
    return tuple(steps)


class ToModelInput:
    """A batch of uint8 images -> the model's input: moved to ``device``, cast to float, resized (``sizes`` in turn,
    bicubic), normalised with ``mean``/``std``, optionally in channels_last memory format."""

    def __init__(self, mean, std, sizes: int | tuple[int, ...], device: torch.device, channels_last: bool = False):
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.sizes = (sizes,) if isinstance(sizes, int) else tuple(sizes)
        self.device, self.channels_last = device, channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).float()
        for size in self.sizes:
            x = resize_batch(x, size).clamp_(0, 255)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def resized_augment(sizes: tuple[int, ...], augment: v2.Compose) -> v2.Compose:
    """The per-image pipeline on uint8 images: the resizes to the training size (bicubic, antialiased), then the
    recipe's augmentation at that size (the loader workers' and :class:`DeviceAugment`'s one definition)."""
    resize = [v2.Resize((s, s), interpolation=v2.InterpolationMode.BICUBIC, antialias=True) for s in sizes]
    return v2.Compose(resize + [augment])


class _Augmented(Dataset):
    def __init__(self, split: Split, sizes: tuple[int, ...], augment: v2.Compose):
        self.split, self.augment = split, augment
        self.pipeline = resized_augment(sizes, augment)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        img = self.pipeline(tv_tensors.Image(self.split.images[i]))
        return img.as_subclass(torch.Tensor), self.split.labels[i]


class DeviceAugment:
    """Per-image augmentation on the training device (``augment_on: device``): the workers' v2 pipeline (the
    resizes, then the recipe's ops) applied to a uint8 batch where it already lies, in groups of ``group`` images.

    torchvision.transforms.v2 draws one set of random parameters per call, so each group shares one draw. With
    ``group=1`` every image gets its own draw, as in the loader workers (the papers' per-image augmentation), at one
    pipeline call per image; a larger group makes fewer calls, and since batches are shuffled every image still
    sees the same distribution of transforms, only images of the same group are transformed alike. The draws come
    from the training process's RNG, which checkpoints save, so resumed runs repeat them exactly."""

    def __init__(self, sizes: tuple[int, ...], augment: v2.Compose, group: int = 1):
        if group < 1:
            raise ValueError(f"augment_group={group} must be a positive integer")
        self.pipeline, self.group = resized_augment(sizes, augment), group

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.pipeline(tv_tensors.Image(chunk)).as_subclass(torch.Tensor)
                          for chunk in images.split(self.group)])


class TrainBatches:
    """This process's share of every shuffled training batch (uint8 images, int64 labels), deterministic in the
    epoch's seed.

    ``batch_size`` is the *global* batch; each of the ``world`` processes takes ``batch_size / world`` images of it
    (``self.batch_size``). ``DistributedSampler(num_replicas=world, rank=rank)`` shuffles one order per epoch
    (``randperm`` seeded with the epoch's seed, the same on every rank) and deals it out round-robin, so the ranks'
    batch *i* together hold exactly the images of the one-process batch *i* at any world size. One process is the
    ``world=1`` case. Without per-image augmentation the split is moved to the device once and batches are slices
    of it; with it, a ``DataLoader`` with ``workers`` processes runs the v2 pipeline per image, or, with
    ``augment_on="device"``, the batches are slices of the split on the device that :class:`DeviceAugment`
    transforms there (``workers`` unused).
    """

    def __init__(self, split: Split, sizes: tuple[int, ...], batch_size: int, augment: v2.Compose | None, workers: int,
                 device: torch.device, rank: int = 0, world: int = 1, augment_on: str = "workers",
                 augment_group: int = 1):
        if batch_size % world:
            raise ValueError(f"batch_size={batch_size} is the global batch and must divide evenly over the "
                             f"{world} processes; choose a multiple of {world} (e.g. --set batch_size="
                             f"{max(world, batch_size // world * world)})")
        self.split, self.batch_size, self.device, self.workers = split, batch_size // world, device, workers
        self.rank, self.world = rank, world
        self.drop_last = len(split) >= batch_size
        self.augment = augment
        if augment_on not in ("workers", "device"):
            raise ValueError(f"augment_on={augment_on!r} must be 'workers' or 'device'")
        self.device_augment = DeviceAugment(sizes, augment, augment_group) \
            if augment is not None and augment_on == "device" else None
        self.dataset = _Augmented(split, sizes, augment) if augment is not None and self.device_augment is None \
            else None
        if self.dataset is None:
            self.images = split.images.to(device)
            self.labels = split.labels.to(device)
        self.sampler = DistributedSampler(range(len(split)), num_replicas=world, rank=rank, shuffle=True, seed=0,
                                          drop_last=self.drop_last)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, seed: int, loader_seed: int = 0, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch shuffled by ``seed``, from batch ``skip`` on (a resumed epoch); ``loader_seed`` seeds workers."""
        self.sampler.set_epoch(seed)
        if self.dataset is None:  # slices of this rank's index list, moved to the device once
            order = torch.tensor(list(self.sampler), device=self.device)
            for i in range(skip, len(self)):
                idx = order[i * self.batch_size:(i + 1) * self.batch_size]
                images = self.images[idx]
                yield (images if self.device_augment is None else self.device_augment(images)), self.labels[idx]
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


def eval_batches(split: Split, batch_size: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Evaluation batches in order, moved to the device one batch at a time."""
    for i in range(0, len(split), batch_size):
        yield split.images[i:i + batch_size].to(device), split.labels[i:i + batch_size].to(device)


def build_mix(mixup_alpha: float, cutmix_alpha: float, mixup_p: float, num_classes: int):
    """Per-batch Mixup / CutMix (GhostMixNet, "Mixup", "CutMix"): MixUp with probability ``mixup_p``, else CutMix.

    torchvision.transforms.v2.MixUp / CutMix / RandomChoice; returns ``None`` when both alphas are 0.
    """
    choices, probs = [], []
    if mixup_alpha > 0:
        choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        probs.append(mixup_p if cutmix_alpha > 0 else 1.0)
    if cutmix_alpha > 0:
        choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        probs.append(1.0 - mixup_p if mixup_alpha > 0 else 1.0)
    if not choices:
        return None
    return choices[0] if len(choices) == 1 else v2.RandomChoice(choices, p=probs)
