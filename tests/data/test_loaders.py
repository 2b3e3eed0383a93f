"""ImageNet loaders (``data.loader``): the same samples, crop boxes, order and error handling in
``pil`` and ``torchvision``; the device-decode path's host logic; the JPEG header parser."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T
from torchvision.transforms.v2.functional import pil_to_tensor

from fst.data import DATASETS, jpeg
from fst.data.images import UnreadableImageError, load_image
from fst.data.loaders import (
    DALI_UNAVAILABLE,
    LOADERS,
    EncodedBatch,
    TrainAugment,
    check_loader,
    read_encoded,
)
from fst.data.photos import PHOTOS, make_photo_folder
from fst.engine.sampler import ResumableSampler
from fst.types import ConfigError

STD_255 = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1) * 255


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real-size JPEGs (~500x375, some portrait, square or grayscale): 16 train, 8 val."""
    root = tmp_path_factory.mktemp("photos") / "set"
    return make_photo_folder(root, n_train=2 * len(PHOTOS), n_val=len(PHOTOS), seed=1)


def _levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| of two normalized images in uint8 levels (0..255 scale)."""
    return (a - b).abs() * STD_255


def _bundle(root, loader, **kw):
    return DATASETS.get("imagenet")(root=str(root), loader=loader, **kw)


def test_photo_folder_is_imagenet_like(photos):
    files = sorted((photos / "train").rglob("*.JPEG"))
    assert len(files) == 2 * len(PHOTOS)
    sizes = [Image.open(f).size for f in files]
    assert (500, 375) in sizes and all(max(s) >= 400 for s in sizes)
    again = make_photo_folder(photos, n_train=2 * len(PHOTOS), n_val=len(PHOTOS), seed=1)
    assert again == photos  # reused, not rewritten


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_torchvision_draws_the_same_crop_boxes_as_pil(photos, seed):
    """The crop box and flip of every train sample equal what ``T.RandomResizedCrop`` +
    ``T.RandomHorizontalFlip`` draw on the PIL image, and the RNG ends in the same state."""
    aug = TrainAugment(224)
    for path in sorted((photos / "train").rglob("*.JPEG"))[:6]:
        img = load_image(path)
        torch.manual_seed(seed)
        box = T.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3])
        flip = bool(torch.rand(1) < 0.5)
        after_pil = torch.get_rng_state()
        torch.manual_seed(seed)
        assert aug.draw(img.height, img.width) == (*box, flip)
        assert torch.equal(torch.get_rng_state(), after_pil)


@pytest.mark.parametrize("split", ["train", "val"])
def test_torchvision_samples_match_pil(photos, split):
    """Same labels; pixels equal up to the resize kernels' rounding (<= 2 of 255 levels, mean
    well under one level: the decoded JPEG pixels themselves are identical)."""
    pil, tv = _bundle(photos, "pil"), _bundle(photos, "torchvision")
    a_ds, b_ds = getattr(pil, split), getattr(tv, split)
    assert len(a_ds) == len(b_ds) and a_ds.samples == b_ds.samples
    for i in range(len(a_ds)):
        torch.manual_seed(100 + i)
        a, ya = a_ds[i]
        state = torch.get_rng_state()
        torch.manual_seed(100 + i)
        b, yb = b_ds[i]
        assert torch.equal(torch.get_rng_state(), state)  # same draws, same count
        assert ya == yb and a.shape == b.shape == (3, 224, 224) and b.dtype == torch.float32
        d = _levels(a, b)
        assert d.max() <= 2.01 and d.mean() < 0.25, (i, d.max(), d.mean())


def test_workers_sampler_and_resume_give_the_same_batches(photos):
    """Through the engine's sampler and 2 DataLoader workers (their own RNG streams), and when
    starting mid-epoch, both loaders yield the same labels and (within tolerance) images."""

    def batches(bundle, skip):
        sampler = ResumableSampler(len(bundle.train), 4, seed=3)
        sampler.set_epoch(1, skip=skip)
        g = torch.Generator().manual_seed(11)
        loader = DataLoader(bundle.train, 4, sampler=sampler, num_workers=2, generator=g)
        return list(loader)

    pil, tv = _bundle(photos, "pil", image_size=64), _bundle(photos, "torchvision", image_size=64)
    for skip in (0, 8):
        a, b = batches(pil, skip), batches(tv, skip)
        assert len(a) == len(b) == (16 - skip) // 4
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(ya, yb)
            assert _levels(xa, xb).max() <= 2.01


def _odd_files(d):
    """Files of every kind the loaders meet, written into ``d``; name -> path."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (45, 61, 3), dtype=np.uint8)).resize((122, 90))
    good = io.BytesIO()
    rgb.save(good, "JPEG", quality=90)
    files = {
        "rgb.jpg": lambda p: p.write_bytes(good.getvalue()),
        "progressive.jpg": lambda p: rgb.save(p, "JPEG", progressive=True),
        "gray.jpg": lambda p: rgb.convert("L").save(p, "JPEG"),
        "cmyk.jpg": lambda p: rgb.convert("CMYK").save(p, "JPEG"),
        "rgb.png": lambda p: rgb.save(p),
        "rgba.png": lambda p: rgb.convert("RGBA").save(p),
        "palette.png": lambda p: rgb.convert("P").save(p),
        "gray16.png": lambda p: Image.fromarray(
            np.asarray(rgb.convert("L")).astype(np.uint16) * 257
        ).save(p),
        "png_named.jpg": lambda p: rgb.save(p, "PNG"),
        "bmp.bmp": lambda p: rgb.save(p),
    }
    out = {}
    for name, write in files.items():
        write(d / name)
        out[name] = d / name
    bad = {
        "empty.jpg": b"",
        "noise.jpg": rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(),
        "truncated.jpg": good.getvalue()[: len(good.getvalue()) // 2],
        "no_eoi.jpg": good.getvalue()[:-2],
        "header_only.jpg": good.getvalue()[:300],
        "text.png": b"not an image",
    }
    for name, data in bad.items():
        (d / name).write_bytes(data)
        out[name] = d / name
    return out


def test_every_readable_file_decodes_to_pils_pixels(tmp_path):
    for name, path in _odd_files(tmp_path).items():
        try:
            expected = pil_to_tensor(load_image(path))
        except UnreadableImageError:
            with pytest.raises(UnreadableImageError, match="cannot read image") as e:
                jpeg.read_rgb(path)
            assert str(path) in str(e.value) and "data.on_error=skip" in str(e.value)
            with pytest.raises(UnreadableImageError):
                read_encoded(path)
            continue
        got = jpeg.read_rgb(path)
        assert got.dtype == torch.uint8 and got.shape == expected.shape, name
        assert torch.equal(got, expected), name  # bit-identical: libjpeg-turbo or PIL itself
        enc = read_encoded(path)
        assert (enc.height, enc.width) == tuple(expected.shape[-2:]), name
        assert enc.encoded == (name in ("rgb.jpg", "progressive.jpg", "gray.jpg")), name


def test_unreadable_files_are_skipped_or_raised_as_with_pil(tmp_path):
    files = _odd_files(tmp_path / "odd")
    root = tmp_path / "data"
    for split in ("train", "val"):
        for c, names in enumerate([("rgb.jpg", "truncated.jpg", "gray16.png"), ("noise.jpg",)]):
            d = root / split / f"c{c}"
            d.mkdir(parents=True)
            for n in names + ("cmyk.jpg",):
                (d / n).write_bytes(files[n].read_bytes())
    kw = dict(image_size=32, resize_size=36)
    runs = {}
    for loader in ("pil", "torchvision"):
        ds = _bundle(root, loader, on_error="skip", **kw).train
        labels = []
        for i in range(len(ds)):
            torch.manual_seed(i)
            labels.append(ds[i][1])
        runs[loader] = (labels, ds.skipped)
        with pytest.raises(UnreadableImageError, match="truncated.jpg"):
            _bundle(root, loader, on_error="raise", **kw).train[3]
    assert runs["pil"] == runs["torchvision"] and runs["pil"][1] == 2


def test_device_decode_host_logic_matches_the_cpu_path(photos, tmp_path):
    """``decode_device=cuda`` minus the GPU: workers read bytes and draw parameters, the batch
    is decoded and augmented when moved (here ``.to("cpu")``): bit-identical to the CPU path,
    including files decoded in the worker (PNG, CMYK)."""
    root = tmp_path / "mixed"
    for split in ("train", "val"):
        for c in ("astronaut", "coffee"):
            d = root / split / c
            d.mkdir(parents=True)
            for f in sorted((photos / split / c).glob("*.JPEG")):
                (d / f.name).write_bytes(f.read_bytes())
            Image.open(f).save(d / "x.png")
            Image.open(f).convert("CMYK").save(d / "y_cmyk.jpg")
    build = LOADERS.get("torchvision")
    for train in (True, False):
        split = root / ("train" if train else "val")
        cpu, _ = build(split, train=train, image_size=64, resize_size=72, decode_device="cpu")
        dev, collate = build(
            split, train=train, image_size=64, resize_size=72, decode_device="cuda"
        )
        n = len(cpu)
        torch.manual_seed(5)
        expected = torch.stack([cpu[i][0] for i in range(n)])
        torch.manual_seed(5)
        batch, labels = collate([dev[i] for i in range(n)])
        assert isinstance(batch, EncodedBatch) and len(batch) == n
        assert len(batch.jpeg_index) == n - 2 * 2 and batch.buffer.dtype == torch.uint8
        assert labels.tolist() == [cpu[i][1] for i in range(n)]
        got = batch.to("cpu")
        assert got.dtype == torch.float32 and torch.equal(got, expected)


def test_device_batches_through_dataloader_workers(photos):
    build = LOADERS.get("torchvision")
    ds, collate = build(
        photos / "train", train=True, image_size=32, resize_size=36, decode_device="cuda"
    )
    loader = DataLoader(ds, 4, num_workers=2, collate_fn=collate)
    images, labels = next(iter(loader))
    x = images.to(torch.device("cpu"), non_blocking=True)
    assert x.shape == (4, 3, 32, 32) and labels.shape == (4,)


@pytest.mark.parametrize(
    "loader, decode_device, match",
    [
        ("ffcv", "cpu", "valid choices: dali, pil, torchvision"),
        ("dali", "cpu", "data.loader=torchvision"),
        ("torchvision", "gpu", "valid choices: cpu, cuda, auto"),
        ("pil", "cuda", "needs data.loader=torchvision"),
    ],
)
def test_loader_choice_errors(loader, decode_device, match):
    with pytest.raises(ConfigError, match=match):
        check_loader(loader, decode_device)


def test_dali_is_declared_unavailable_not_faked(photos):
    assert "dali" in LOADERS and "NVIDIA DALI" in DALI_UNAVAILABLE
    with pytest.raises(ConfigError, match="not available"):
        _bundle(photos, "dali")
    with pytest.raises(ConfigError, match="not available"):
        DATASETS.get("imagenet").check(root=str(photos), loader="dali")


@pytest.mark.skipif(torch.cuda.is_available(), reason="machine has CUDA")
def test_decode_on_cuda_without_cuda_says_what_to_do():
    with pytest.raises(ConfigError, match="data.decode_device=cpu"):
        check_loader("torchvision", "cuda")
    assert check_loader("torchvision", "auto") == "cpu"


def test_jpeg_header_parser(tmp_path):
    files = _odd_files(tmp_path)
    for name in ("rgb.jpg", "progressive.jpg", "gray.jpg", "cmyk.jpg"):
        data = files[name].read_bytes()
        h = jpeg.parse_jpeg_header(data)
        img = Image.open(files[name])
        assert (h.width, h.height) == img.size, name
        assert h.components == len(img.getbands()) and h.progressive == (name == "progressive.jpg")
        assert jpeg.has_eoi(data)
    for name in ("rgb.png", "empty.jpg", "noise.jpg", "text.png", "png_named.jpg"):
        assert jpeg.parse_jpeg_header(files[name].read_bytes()) is None, name
    assert jpeg.parse_jpeg_header(files["rgb.jpg"].read_bytes()[:40]) is None
    assert not jpeg.has_eoi(files["truncated.jpg"].read_bytes())


def test_truncated_jpeg_with_a_thumbnail_is_not_taken_for_complete(tmp_path):
    """A thumbnail in an APP1 segment ends with its own FF D9: only the marker after the first
    scan says the main image is complete."""
    files = _odd_files(tmp_path / "odd")
    good = files["rgb.jpg"].read_bytes()
    small = io.BytesIO()
    Image.open(files["gray.jpg"]).resize((16, 12)).save(small, "JPEG")
    thumb = small.getvalue()
    app1 = b"\xff\xe1" + (len(thumb) + 2).to_bytes(2, "big") + thumb
    data = good[:2] + app1 + good[2 : len(good) // 2]  # main image cut in half
    path = tmp_path / "thumb_truncated.jpg"
    path.write_bytes(data)
    h = jpeg.parse_jpeg_header(data)
    assert h is not None and h.scan_start > len(app1) and (h.width, h.height) == (122, 90)
    assert jpeg.has_eoi(data) and not jpeg.has_eoi(data, h.scan_start)
    with pytest.raises(UnreadableImageError):
        load_image(path)
    with pytest.raises(UnreadableImageError, match="thumb_truncated.jpg"):
        read_encoded(path)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nvjpeg_batches_match_the_cpu_path(photos):
    """On a GPU: batched nvJPEG decode + augmentation on the device gives the CPU path's images
    within the decoders' tolerance (nvJPEG's IDCT and upsampling differ from libjpeg-turbo's)."""
    cpu = _bundle(photos, "torchvision", decode_device="cpu")
    dev = _bundle(photos, "torchvision", decode_device="cuda")
    for split in ("train", "val"):
        a_ds, b_ds = getattr(cpu, split), getattr(dev, split)
        n = len(a_ds)
        torch.manual_seed(0)
        expected = torch.stack([a_ds[i][0] for i in range(n)])
        torch.manual_seed(0)
        batch, _ = dev.collate_fn([b_ds[i] for i in range(n)])
        got = batch.pin_memory().to("cuda", non_blocking=True)
        assert got.device.type == "cuda" and got.shape == expected.shape
        d = _levels(got.cpu(), expected)
        assert d.mean() < 1.0 and d.max() <= 32, (split, d.mean(), d.max())


def test_training_runs_see_the_same_data_with_either_loader(photos, tmp_path):
    """Two shrunk training runs on the JPEG folder, ``pil`` vs ``torchvision``: the same batches
    (same crops), so the same losses up to the resize rounding."""
    from fst.engine.training import train
    from fst.logging.jsonl import read_jsonl
    from tests.conftest import SHRINK, TINY_RESNET, compose

    losses = {}
    for loader in ("pil", "torchvision"):
        cfg = compose(
            [
                *SHRINK,
                *TINY_RESNET,
                "data=imagenet",
                f"data.root={photos}",
                "data.image_size=32",
                "data.resize_size=36",
                f"data.loader={loader}",
                "trainer.log_every_n_steps=1",
            ]
        )
        summary = train(cfg, run_dir=tmp_path / loader)
        recs = read_jsonl(tmp_path / loader / "metrics.jsonl")
        losses[loader] = [r["train/loss"] for r in recs if "train/loss" in r]
        losses[loader].append(summary["val/loss"])
    assert len(losses["pil"]) == 3
    assert losses["pil"] == pytest.approx(losses["torchvision"], rel=2e-3)
