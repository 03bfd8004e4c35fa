"""Data sets and batching: CIFAR on-disk fixtures through torchvision's code path, offline errors, digits, fake,
imagefolder, the seeded 95:5 split, deterministic batches, Mixup/CutMix."""
from __future__ import annotations

import pickle
import tarfile
import urllib.error

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from ghostnest.data import (
    DataNotFoundError,
    Split,
    TrainBatches,
    build_augment,
    build_mix,
    build_train_pipeline,
    load_dataset,
    make_fake,
    train_val_split,
)
from ghostnest.data import datasets as ds_mod
from ghostnest.train import resolve_config


def _write_cifar10(root, n=3):
    """The real on-disk layout torchvision reads: cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels, "filenames": ["x.png"] * n}, f)
        batches[name] = (data, labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": n, "num_vis": 3072}, f)
    return batches, names


def _write_cifar100(root, n=4):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("train", "test"):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "fine_labels": [int(v) for v in rng.integers(0, 100, n)],
                         "coarse_labels": [0] * n, "filenames": ["x"] * n}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": ["a"] * 20}, f)


@pytest.fixture
def no_download(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(ds_mod, "_try_download", fail)


def test_cifar10_fixture_loads_through_torchvision(tmp_path, no_download):
    batches, names = _write_cifar10(tmp_path)
    data = load_dataset("cifar10", str(tmp_path))
    assert len(data.train) == 15 and len(data.test) == 3
    assert data.classes == names and data.num_classes == 10
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape == (15, 3, 32, 32)
    raw, labels = batches["data_batch_1"]
    # row layout: 1024 red, 1024 green, 1024 blue values, row-major
    assert data.train.images[0, 0, 0, 0] == raw[0, 0] and data.train.images[0, 1, 0, 0] == raw[0, 1024]
    assert data.train.images[0, 2, 31, 31] == raw[0, 3071]
    assert data.train.labels[:3].tolist() == labels
    assert data.test.labels.tolist() == batches["test_batch"][1]
    assert data.mean == (0.4914, 0.4822, 0.4465) and data.std == (0.2470, 0.2435, 0.2616)  # docs/reference.md


def test_cifar100_and_cifar100_128_fixture(tmp_path, no_download):
    _write_cifar100(tmp_path)
    data = load_dataset("cifar100", str(tmp_path))
    assert data.num_classes == 100 and len(data.train) == 4 and data.size == 32
    big = load_dataset("cifar100_128", str(tmp_path))
    assert big.size == 128 and big.train.images.shape[-1] == 32  # stored at 32, resized per batch to 128
    assert torch.equal(big.train.labels, data.train.labels)


def test_cifar10_from_archive_only(tmp_path, no_download):
    src = tmp_path / "src"
    _write_cifar10(src)
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    data = load_dataset("cifar10", str(tmp_path))
    assert len(data.train) == 15


def test_offline_missing_data_error_writes_nothing(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("cifar10", str(root), download=False)
    msg = str(err.value)
    assert "cifar-10-batches-py" in msg and "cifar-10-python.tar.gz" in msg and str(root) in msg
    assert not root.exists()
    assert isinstance(err.value, OSError)


def test_incomplete_cifar_folder_names_the_missing_files(tmp_path, no_download):
    _write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(DataNotFoundError, match=r"cifar-10-batches-py/ is incomplete \(no data_batch_4, batches.meta\)"):
        load_dataset("cifar10", str(tmp_path), download=False)
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_1").is_file()  # what was there is kept


def test_failed_download_is_cleaned_up(tmp_path, monkeypatch):
    from torchvision import datasets

    def offline_download(self):
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / "cifar-100-python.tar.gz").write_bytes(b"partial")
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(datasets.CIFAR100, "download", offline_download)
    with pytest.raises(DataNotFoundError, match="cifar-100-python"):
        load_dataset("cifar100_128", str(tmp_path / "data"), download=True)
    assert not (tmp_path / "data").exists()


def test_corrupt_cifar_file(tmp_path, no_download):
    _write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt"):
        load_dataset("cifar10", str(tmp_path))


def test_digits_embedded_fixed_stratified_split():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert len(a.train) == 1437 and len(a.test) == 360
    assert a.train.images.shape[1:] == (3, 32, 32) and a.train.images.dtype == torch.uint8
    assert torch.equal(a.test.labels, b.test.labels) and torch.equal(a.train.images, b.train.images)
    counts = torch.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class
    assert torch.equal(a.train.images[:, 0], a.train.images[:, 2])  # grey replicated to RGB
    assert a.classes == [str(i) for i in range(10)]


def test_fake_is_seeded_and_configurable():
    a, b = make_fake(classes=3, size=20, train=10, test=5), load_dataset("fake:classes=3,size=20,train=10,test=5")
    assert torch.equal(a.train.images, b.train.images) and a.train.images.shape == (10, 3, 20, 20)
    assert b.num_classes == 3 and len(b.test) == 5
    c = load_dataset("fake:classes=3,size=20,train=10,test=5,seed=1")
    assert not torch.equal(a.train.images, c.train.images)
    with pytest.raises(ValueError, match="fake:classes=N"):
        load_dataset("fake:colours=3")
    with pytest.raises(ValueError, match="unknown dataset 'cifar1000'"):
        load_dataset("cifar1000")


def test_imagefolder(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 30), colour).save(tmp_path / split / cls / f"{i}.png")
    data = load_dataset(f"imagefolder:{tmp_path}:24")
    assert data.classes == ["cat", "dog"] and data.train.images.shape == (4, 3, 24, 24) and data.size == 24
    assert data.train.images[0, 0, 5, 5] == 255 and data.train.images[-1, 2, 5, 5] == 255
    (tmp_path / "test" / "dog" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        load_dataset(f"imagefolder:{tmp_path}:24")
    with pytest.raises(DataNotFoundError, match="ImageFolder"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")


def test_train_val_split_95_5():
    split = Split(torch.zeros(50_000, 1, 1, 1, dtype=torch.uint8), torch.arange(50_000))
    train, val = train_val_split(split, 0.05, seed=0)
    assert len(train) == 47_500 and len(val) == 2_500  # ME-NeSt-Ghost, section 2
    assert set(train.labels.tolist()).isdisjoint(val.labels.tolist())
    again, _ = train_val_split(split, 0.05, seed=0)
    other, _ = train_val_split(split, 0.05, seed=1)
    assert torch.equal(train.labels, again.labels) and not torch.equal(train.labels, other.labels)
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(split, 0.0, seed=0)


def test_batches_deterministic_per_epoch_seed_with_workers():
    data = make_fake(classes=4, size=16, train=24, test=4)
    aug = build_augment([{"op": "RandomCrop", "size": 16, "padding": 2}, {"op": "RandomHorizontalFlip"}])
    batches = TrainBatches(data.train, (), 8, aug, workers=1, device=torch.device("cpu"))
    run1, run2 = list(batches.epoch(5)), list(batches.epoch(5))
    run3 = list(batches.epoch(6))
    assert len(run1) == 3 and all(torch.equal(a[0], b[0]) for a, b in zip(run1, run2, strict=True))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(run1, run3, strict=True))
    plain = TrainBatches(data.train, (), 8, None, workers=0, device=torch.device("cpu"))
    seen = torch.cat([lab for _, lab in plain.epoch(0)])
    assert sorted(seen.tolist()) == sorted(data.train.labels.tolist())  # one pass over every image


def test_device_augment_draws_per_image_or_per_group():
    """augment_on=device: the v2 ops on the batch where it lies; group=1 draws per image (as the workers do), a
    group of the whole batch draws once; the resizes come first; the same seed gives the same batch."""
    from ghostnest.data.loader import DeviceAugment

    images = torch.arange(64 * 3 * 4 * 4, dtype=torch.int64).remainder(251).to(torch.uint8).view(64, 3, 4, 4)
    flip = build_augment([{"op": "RandomHorizontalFlip"}])
    flipped = images.flip(-1)

    def flips(group):
        torch.manual_seed(0)
        out = DeviceAugment((), flip, group)(images)
        assert out.shape == images.shape and out.dtype == torch.uint8
        assert all(torch.equal(o, a) or torch.equal(o, b) for o, a, b in zip(out, images, flipped, strict=True))
        return [torch.equal(o, b) for o, b in zip(out, flipped, strict=True)]

    per_image, whole = flips(1), flips(64)
    assert 0 < sum(per_image) < 64  # each image its own coin
    assert len(set(whole)) == 1  # one coin for all
    by_eight = flips(8)
    assert all(len(set(by_eight[i:i + 8])) == 1 for i in range(0, 64, 8)) and len(set(by_eight)) == 2
    assert flips(1) == per_image  # seeded: a resumed run repeats it
    torch.manual_seed(0)
    assert DeviceAugment((8,), flip, 4)(images).shape == (64, 3, 8, 8)  # resized first, as in the workers
    with pytest.raises(ValueError, match="augment_group=0"):
        DeviceAugment((), flip, 0)


def test_device_augment_pipeline_and_config():
    data = make_fake(classes=4, size=16, train=24, test=4)
    cfg = resolve_config({"dataset": "fake:classes=4,size=16,train=24,test=4", "batch_size": 8, "image_size": 24,
                          "augment": [{"op": "RandomCrop", "size": 24, "padding": 2}], "augment_on": "device",
                          "augment_group": 4, "workers": 3})
    pipe = build_train_pipeline(cfg, data, torch.device("cpu"))
    assert pipe.batches.dataset is None and pipe.batches.device_augment is not None  # no DataLoader, no workers
    x, y = next(iter(pipe.batches.epoch(0)))
    assert x.shape == (8, 3, 24, 24) and x.dtype == torch.uint8 and pipe.preprocess(x).shape == (8, 3, 24, 24)
    with pytest.raises(ValueError, match="augment_on='gpu' is not accepted; accepted values: workers, device"):
        resolve_config({"augment_on": "gpu"})
    with pytest.raises(ValueError, match="augment_group=0 must be a positive integer"):
        resolve_config({"augment_group": 0})


def test_build_augment_rejects_unknown_ops():
    with pytest.raises(ValueError, match="unknown augment op 'Sharpen'"):
        build_augment([{"op": "Sharpen"}])
    with pytest.raises(ValueError, match="policy"):
        build_augment([{"op": "AutoAugment", "policy": "mnist"}])
    with pytest.raises(ValueError, match="RandomCrop"):
        build_augment([{"op": "RandomCrop", "sise": 3}])


def test_build_mix():
    both = build_mix(0.2, 1.0, 0.5, 10)
    assert isinstance(both, v2.RandomChoice) and both.p == [0.5, 0.5]
    assert isinstance(both.transforms[0], v2.MixUp) and isinstance(both.transforms[1], v2.CutMix)
    assert isinstance(build_mix(0.2, 0.0, 0.5, 10), v2.MixUp) and build_mix(0, 0, 0.5, 10) is None
    x, y = both(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert y.shape == (4, 10) and torch.allclose(y.sum(1), torch.ones(4))


def test_train_pipeline_builder_is_what_training_uses():
    from ghostnest.data import build_train_pipeline
    from ghostnest.train import resolve_config

    data = make_fake(classes=4, size=16, train=40, test=8)
    cfg = resolve_config({"recipe": "t", "model": "ghostmixnet", "dataset": "fake", "batch_size": 8, "workers": 0,
                          "val_fraction": 0.25, "image_size": 24, "mixup_alpha": 0.2})
    pipe = build_train_pipeline(cfg, data, torch.device("cpu"))
    assert (len(pipe.train_split), len(pipe.val_split), len(pipe.batches)) == (30, 10, 3)
    assert pipe.sizes == (24,) and pipe.image_size == 24 and pipe.val_shard is pipe.val_split
    images, labels = next(pipe.batches.epoch(0))
    x, y = pipe.mix(pipe.preprocess(images), labels)
    assert x.shape == (8, 3, 24, 24) and x.dtype == torch.float32 and y.shape == (8, 4)
    rank1 = build_train_pipeline(cfg, data, "cpu", rank=1, world=2)
    assert rank1.batches.batch_size == 4 and len(rank1.val_shard) == 5
