"""The one image reader (ghostnest.data.images): every Pillow mode reads as the 8-bit RGB a person sees, so a
trained model's prediction does not depend on how a picture was saved; huge images are refused in one line or
decoded at reduced size."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from ghostnest.cli import main
from ghostnest.data import images, load_dataset
from ghostnest.data.images import read_image

TINY_DIGITS = ["--recipe", "quickstart", "--set", "epochs=2", "--set", "batch_size=16", "--set", "lr=0.003",
               "--set", "model_kwargs={widths: [8, 16, 16], stem_width: 8, depths: [1, 1, 1], pool_size: 1, "
               "se: false, drop_rate: 0.0}"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A tiny GhostMixNet trained for 2 epochs on the quickstart's digits (~85% test top-1, a few seconds)."""
    out = tmp_path_factory.mktemp("digits") / "run"
    assert main(["train", *TINY_DIGITS, "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    return out


def variants(grey: np.ndarray) -> dict[str, tuple[Image.Image, str]]:
    """One digit (uint8 H x W, white ink on black) saved in every mode, each as a person would see the digit;
    name -> (image, file suffix). Each differs from the digit under Pillow's plain ``convert("RGB")``."""
    g16 = grey.astype(np.uint16) * 257
    white = np.full_like(grey, 255)
    palette = Image.fromarray(grey).convert("P")  # palette = the grey levels; make index 0 transparent *white*
    pal = palette.getpalette()
    zero = palette.getpixel((0, 0)) if grey[0, 0] == 0 else 0
    pal[3 * zero:3 * zero + 3] = [255, 255, 255]
    palette.putpalette(pal)
    palette.info["transparency"] = zero
    rotated = Image.fromarray(np.rot90(grey).copy()).convert("RGB")  # stored on its side, EXIF says turn it back
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rotated.info["exif"] = exif.tobytes()
    return {
        "rgb": (Image.fromarray(grey).convert("RGB"), ".png"),
        "L": (Image.fromarray(grey), ".png"),
        "1": (Image.fromarray(grey).point(lambda v: 255 if v >= 128 else 0).convert("1"), ".png"),
        "P-transparent": (palette, ".png"),
        "I;16": (Image.fromarray(g16), ".png"),
        "I;16B": (Image.frombytes("I;16B", grey.shape[::-1], g16.astype(">u2").tobytes()), ".tiff"),
        "I": (Image.fromarray(g16.astype(np.int32)), ".tiff"),
        "F": (Image.fromarray(grey.astype(np.float32) / 255), ".tiff"),
        "LA": (Image.merge("LA", [Image.fromarray(white), Image.fromarray(grey)]), ".png"),
        "RGBA": (Image.merge("RGBA", [Image.fromarray(white)] * 3 + [Image.fromarray(grey)]), ".png"),
        "CMYK": (Image.fromarray(grey).convert("RGB").convert("CMYK"), ".tiff"),
        "YCbCr": (Image.fromarray(grey).convert("RGB").convert("YCbCr"), ".tiff"),
        "exif-rotated": (rotated, ".png"),
    }


def test_every_mode_reads_as_the_grey_digit_and_predicts_the_same(digits_run, tmp_path):
    data = load_dataset("digits")
    folder = tmp_path / "modes"
    folder.mkdir()
    digits = [0, 1, 2]
    greys = [data.test.images[i, 0].numpy() for i in digits]
    for d, grey in zip(digits, greys, strict=True):
        for name, (img, suffix) in variants(grey).items():
            img.save(folder / f"d{d}-{name}{suffix}", **({"exif": img.info["exif"]} if "exif" in img.info else {}))
    for path in sorted(folder.iterdir()):
        d = int(path.name[1])
        want = torch.from_numpy(greys[digits.index(d)]).expand(3, -1, -1).int()
        if "-1." in path.name:  # a 1-bit image holds the digit thresholded
            want = (want >= 128).int() * 255
        got = read_image(path).int()
        assert got.shape == want.shape, path.name
        assert (got - want).abs().max() <= 1, f"{path.name} reads {(got - want).abs().max()} levels off"
        if path.name.endswith(("-I;16.png", "-F.tiff", "-LA.png", "-P-transparent.png")):
            with Image.open(path) as img:  # what the reader replaces: Pillow's clipping / alpha-dropping conversion
                plain = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).int()
            assert (plain - want).abs().max() > 50, path.name

    out = tmp_path / "pred.csv"
    assert main(["predict", str(digits_run), str(folder), "--out", str(out), "--device", "cpu"]) == 0
    with open(out, newline="") as f:
        label = {r["ID"]: r["label"] for r in csv.DictReader(f)}
    assert len(label) == len(digits) * 13
    for d in digits:
        same = {k: v for k, v in label.items() if k.startswith(f"d{d}-") and "-1." not in k}
        assert set(same.values()) == {label[f"d{d}-rgb.png"]}, same


def test_background_is_a_choice():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_list(images.to_rgb(rgba)) == [0, 0, 0]
    assert to_list(images.to_rgb(rgba, background=(255, 255, 255))) == [255, 255, 255]
    half = Image.new("LA", (4, 4), (255, 128))
    assert to_list(images.to_rgb(half)) == [128, 128, 128]


def to_list(img: Image.Image) -> list[int]:
    return list(img.getpixel((0, 0)))


@pytest.mark.parametrize("values, mode, want", [
    ([0.0, 0.5, 1.0], "F", [0, 128, 255]),            # floats in 0..1
    ([0.0, 100.0, 200.0], "F", [0, 100, 200]),        # floats in 0..255
    ([-1.0, 0.0, 1.0], "F", [0, 128, 255]),           # no standard range: stretched from min..max
    ([0, 100, 255], "I", [0, 100, 255]),              # 32-bit integers that are 8-bit values
    ([0, 32896, 65535], "I", [0, 128, 255]),          # ... 16-bit values
    ([0, 400000, 1000000], "I", [0, 102, 255]),       # ... wider: stretched
])
def test_int_and_float_images_are_scaled_to_their_range(values, mode, want):
    a = np.array([values], dtype=np.float32 if mode == "F" else np.int32)
    got = np.asarray(images.to_rgb(Image.fromarray(a)))[0, :, 0].tolist()
    assert got == want


def test_a_16_bit_transparent_grey_value_is_composited():
    a = np.array([[0, 1000, 65535]], dtype=np.uint16)
    img = Image.fromarray(a)
    img.info["transparency"] = 65535
    assert np.asarray(images.to_rgb(img, background=(7, 7, 7)))[0, :, 0].tolist() == [0, 4, 7]


def test_a_huge_png_is_one_line_naming_the_file_and_the_limit(digits_run, tmp_path, monkeypatch, capsys):
    path = tmp_path / "huge.png"
    Image.new("L", (300, 200)).save(path)
    monkeypatch.setattr(images, "MAX_PIXELS", 50_000)  # a 300x200 PNG stands in for a 14000x14000 one
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # ... and Pillow's bomb check would have fired on it
    with pytest.raises(ValueError, match=r"huge.png is 300x200 pixels .* at most 0.05 megapixels"):
        read_image(path, size=32)
    out = tmp_path / "pred.csv"
    assert main(["predict", str(digits_run), str(path), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: image ") and "huge.png" in err and "MAX_PIXELS" in err and "\n" not in err
    assert not out.exists()
    assert Image.MAX_IMAGE_PIXELS == 10_000  # lifted only while the file was opened


def test_a_huge_jpeg_is_decoded_at_reduced_size(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    grad = np.tile(np.linspace(0, 255, 640, dtype=np.float32), (480, 1)).astype(np.uint8)
    Image.fromarray(grad).convert("RGB").save(path, quality=95)
    monkeypatch.setattr(images, "MAX_PIXELS", 100_000)  # below the file's 307,200 pixels
    monkeypatch.setattr(images, "REDUCE_ABOVE", 10_000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    x = read_image(path, size=32)  # libjpeg decodes at 1/4 (160x120: at least 2 x 32 on each side), then box-reduced
    assert x.shape == (3, 120, 80)
    assert abs(x[0, 60, 40].item() - 128) < 8  # the middle of the gradient
    small = tmp_path / "big.png"
    Image.fromarray(grad).save(small)
    with pytest.raises(ValueError, match="cannot be decoded at reduced size"):
        read_image(small, size=32)
    monkeypatch.setattr(images, "MAX_PIXELS", 1_000_000)
    y = read_image(small, size=32)  # a PNG decodes whole and is box-reduced to at least 2 x 32 on each side
    assert y.shape == (3, 69, 64)  # 640 // 64 = 10 and 480 // 64 = 7 (the last block partial)
