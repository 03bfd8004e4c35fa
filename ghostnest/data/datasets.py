"""Data sets, held in memory as uint8 image tensors (airbench style: no per-image Python work unless augmenting).

Every data set is a :class:`ImageData`: ``train`` and ``test`` splits of uint8 ``(N, 3, H, W)`` tensors with int64
labels, the class names, and the per-channel mean/std used to normalise it. Names accepted by
:func:`load_dataset`:

- ``cifar10`` / ``cifar100``: torchvision's CIFAR data sets (GhostMixNet, "Data"; ME-NeSt-Ghost,
  section 2), read from ``DATA_DIR/cifar-10-batches-py`` / ``DATA_DIR/cifar-100-python`` and downloaded there by
  torchvision when online.
- ``cifar100_128``: CIFAR-100 resized to 128 x 128 with bicubic interpolation, our stand-in for the paper's
  super-resolved CIFAR-100 (ME-NeSt-Ghost, section 2; the CAI super-resolution set is not redistributable here).
  The resize happens per batch / per image at the training resolution, so memory stays at 32 x 32.
- ``imagefolder:PATH``: a torchvision ``ImageFolder`` tree with ``train/`` and ``test/`` sub-folders, loaded into
  memory resized to 128 x 128 (``imagefolder:PATH:SIZE`` for another size); every file is read by
  :func:`ghostnest.data.images.read_image` (any Pillow mode -> the 8-bit RGB a person sees), as predict reads it.
- ``digits``: scikit-learn's bundled handwritten digits (1,797 real 8 x 8 grey images, 10 classes; no download),
  upsampled to 32 x 32 RGB, with a fixed stratified 80:20 train/test split. The embedded default data set.
- ``fake``: seeded synthetic images whose class decides a smooth colour pattern (learnable, unlike pure noise), for
  tests and benchmarks: ``fake:classes=10,size=32,train=512,test=128``, any subset of the options.
"""
from __future__ import annotations

import os
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..normalization import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD
from .images import read_image

DATASETS = ("cifar10", "cifar100", "cifar100_128", "digits", "fake", "imagefolder:PATH")


class DataNotFoundError(FileNotFoundError):
    """The data set's files are not on disk and could not be downloaded (an OSError: the CLI prints one line)."""


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, 3, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])


@dataclass
class ImageData:
    name: str
    train: Split
    test: Split
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int  # the data set's nominal resolution (128 for cifar100_128 although it is stored at 32)
    notes: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def default_data_dir() -> str:
    return os.environ.get("GHOSTNEST_DATA", "./data")


def dataset_size(name: str) -> int:
    """Nominal image size of a data set without loading it (used to resolve a recipe's ``image_size``)."""
    kind, opts = _parse(name)
    if kind == "cifar100_128":
        return 128
    if kind == "fake":
        return opts["size"]
    if kind == "imagefolder":
        return opts["size"]
    return 32


def dataset_classes(name: str) -> int | None:
    """Class count of a data set without loading it (``None`` for an image folder: its sub-folders decide)."""
    kind, opts = _parse(name)
    if kind == "fake":
        return opts.get("classes", 10)
    return {"cifar10": 10, "cifar100": 100, "cifar100_128": 100, "digits": 10}.get(kind)


def check_dataset_name(name: str) -> None:
    _parse(name)


def load_dataset(name: str, data_dir: str | None = None, download: bool = True) -> ImageData:
    """Load data set ``name`` (see the module docstring) into memory."""
    kind, opts = _parse(name)
    data_dir = data_dir or default_data_dir()
    if kind in ("cifar10", "cifar100", "cifar100_128"):
        return _load_cifar(kind, name, Path(data_dir), download)
    if kind == "digits":
        return _load_digits()
    if kind == "fake":
        return make_fake(**opts)
    return _load_imagefolder(Path(opts["path"]), opts["size"], name)


def _parse(name: str) -> tuple[str, dict]:
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset must be a name; accepted: {', '.join(DATASETS)}")
    if name in ("cifar10", "cifar100", "cifar100_128", "digits"):
        return name, {}
    if name == "fake" or name.startswith("fake:"):
        opts = {"classes": 10, "size": 32, "train": 512, "test": 128, "seed": 0}
        for item in filter(None, name[5:].split(",")):
            key, _, value = item.partition("=")
            if key not in opts or not value.strip().isdigit():
                raise ValueError(
                    f"bad fake data set option {item!r} in {name!r}; accepted: "
                    "fake:classes=N,size=N,train=N,test=N,seed=N (positive integers)"
                )
            opts[key] = int(value)
        if opts["classes"] < 2 or opts["size"] < 1 or opts["train"] < 1 or opts["test"] < 1:
            raise ValueError(f"fake data set {name!r} needs classes >= 2 and size, train, test >= 1")
        return "fake", opts
    if name.startswith("imagefolder:"):
        rest = name[len("imagefolder:"):]
        path, size = rest, 128
        head, sep, tail = rest.rpartition(":")
        if sep and tail.isdigit():
            path, size = head, int(tail)
        if not path:
            raise ValueError("imagefolder needs a path: imagefolder:PATH (with PATH/train/CLASS/*.png, PATH/test/...)")
        return "imagefolder", {"path": path, "size": size}
    raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}")


# --- CIFAR (torchvision) -------------------------------------------------------------------------------------------

_CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz",
                ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"]),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz", ["train", "test", "meta"]),
}


def _torchvision_cifar(kind: str):
    """torchvision's CIFAR class, checking that the files exist instead of their MD5 sums.

    torchvision verifies MD5 sums when it downloads; checking them again on every load would make a hand-built
    CIFAR-format file (a test fixture, a re-pickled copy) unreadable. A corrupt file still fails to unpickle, and
    :func:`_load_cifar` turns that into a one-line error.
    """
    from torchvision import datasets

    base = datasets.CIFAR10 if kind == "cifar10" else datasets.CIFAR100

    class _Cifar(base):
        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            return all((folder / f).is_file() for f, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return _Cifar


def _load_cifar(kind: str, name: str, root: Path, download: bool) -> ImageData:
    base_kind = "cifar10" if kind == "cifar10" else "cifar100"
    folder, archive, files = _CIFAR_FILES[base_kind]
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"the data folder {root} is a file, not a folder: point --data-dir (or "
                                 f"$GHOSTNEST_DATA) at the folder that holds {folder}/ or {archive}, or where "
                                 "they may be downloaded")
    cls = _torchvision_cifar(base_kind)
    present = all((root / folder / f).is_file() for f in files)
    if not present:
        if (root / archive).is_file():
            from torchvision.datasets.utils import extract_archive

            extract_archive(str(root / archive), str(root))
        elif download:
            _try_download(cls, root, base_kind, folder, archive, files)
    if not all((root / folder / f).is_file() for f in files):
        raise DataNotFoundError(_missing_message(base_kind, root, folder, archive, files))
    try:
        train, test = cls(str(root), train=True), cls(str(root), train=False)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as exc:
        raise ValueError(
            f"{root / folder} holds a corrupt or incomplete CIFAR file ({type(exc).__name__}: {exc}); delete the "
            f"folder and download again, or put a fresh {archive} in {root}"
        ) from None

    def to_split(ds) -> Split:
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return Split(images, torch.tensor(ds.targets, dtype=torch.int64))

    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if base_kind == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    return ImageData(name, to_split(train), to_split(test), list(train.classes), mean, std, dataset_size(name))


def _try_download(cls, root: Path, kind: str, folder: str, archive: str, files: list[str]) -> None:
    """Download with torchvision; offline, undo anything written (a created folder, a partial archive)."""
    existed = root.exists()
    try:
        cls(str(root), train=True, download=True)
    except Exception:  # offline (URLError), DNS failure, checksum mismatch: we report the missing files instead
        partial = root / archive
        if partial.exists():
            partial.unlink()
        if not all((root / folder / f).is_file() for f in files) and (root / folder).exists() and not existed:
            shutil.rmtree(root / folder, ignore_errors=True)
        if not existed and root.exists() and not any(root.iterdir()):
            root.rmdir()


def _missing_message(kind: str, root: Path, folder: str, archive: str, files: list[str]) -> str:
    url = f"https://www.cs.toronto.edu/~kriz/{archive}"
    missing = [f for f in files if not (root / folder / f).is_file()]
    where = (f"{root / folder}/ is incomplete (no {', '.join(missing)})" if (root / folder).is_dir()
             else f"{kind} is not in {root}")
    return (
        f"{where} and could not be downloaded: put the extracted folder {root / folder}/ "
        f"(files {', '.join(files)}) or the archive {root / archive} ({url}) there, or point --data-dir / "
        f"$GHOSTNEST_DATA at the folder that holds them"
    )


# --- digits (scikit-learn, embedded) -------------------------------------------------------------------------------


def _load_digits() -> ImageData:
    """scikit-learn's handwritten digits: 8 x 8 grey (0-16) -> 32 x 32 RGB uint8, fixed stratified 80:20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div(16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False)
    images = images.clamp(0, 1).mul(255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(digits.target).long()
    idx = torch.arange(len(labels)).numpy()
    train_idx, test_idx = train_test_split(idx, test_size=0.2, random_state=0, stratify=digits.target)
    train, test = Split(images[train_idx], labels[train_idx]), Split(images[test_idx], labels[test_idx])
    m = train.images[:, 0].float().div(255)
    mean, std = (round(m.mean().item(), 4),) * 3, (round(m.std().item(), 4),) * 3
    return ImageData("digits", train, test, [str(d) for d in range(10)], mean, std, 32)


# --- fake (seeded, learnable) --------------------------------------------------------------------------------------


def make_fake(classes: int = 10, size: int = 32, train: int = 512, test: int = 128, seed: int = 0) -> ImageData:
    """Synthetic images: a class-specific smooth 4 x 4 colour pattern, upsampled, plus pixel noise (seeded)."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(classes, 3, 4, 4, generator=g)

    def split(n: int) -> Split:
        labels = torch.randint(0, classes, (n,), generator=g)
        base = F.interpolate(protos[labels], size=size, mode="bilinear", align_corners=False)
        x = (base + 0.25 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
        return Split(x.mul(255).round().to(torch.uint8), labels)

    name = f"fake:classes={classes},size={size},train={train},test={test},seed={seed}"
    return ImageData(name, split(train), split(test), [f"class_{i}" for i in range(classes)],
                     (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), size)


# --- ImageFolder ---------------------------------------------------------------------------------------------------


def _load_imagefolder(path: Path, size: int, name: str) -> ImageData:
    from torchvision.datasets import ImageFolder

    for sub in ("train", "test"):
        if not (path / sub).is_dir():
            raise DataNotFoundError(
                f"{path / sub} is not a folder: imagefolder:{path} needs {path}/train/CLASS/*.jpg and "
                f"{path}/test/CLASS/*.jpg (torchvision ImageFolder layout)"
            )

    def load(sub: str, classes: list[str] | None) -> tuple[Split, list[str]]:
        ds = ImageFolder(str(path / sub))
        if classes is not None and ds.classes != classes:
            raise ValueError(f"{path}/test has classes {ds.classes} but {path}/train has {classes}; make them match")
        images = []
        for file, _ in ds.samples:
            img = read_image(file, size)
            images.append(F.interpolate(img[None].float(), size=(size, size), mode="bicubic", antialias=True,
                                        align_corners=False).clamp(0, 255).round().to(torch.uint8)[0])
        return Split(torch.stack(images), torch.tensor(ds.targets, dtype=torch.int64)), ds.classes

    train, classes = load("train", None)
    test, _ = load("test", classes)
    return ImageData(name, train, test, classes, IMAGENET_MEAN, IMAGENET_STD, size)
