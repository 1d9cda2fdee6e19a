"""The pixel store and the device transforms: decoded once, reused, atomic, keyed; eval pixels equal timm's PIL
eval transform to one grey level; augmentation draws as torchvision's RandomResizedCrop draws."""
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from scipy import stats

from benchmark.config import DatasetEntry
from benchmark.data import load_source
from benchmark.data.augment import EvalTransform, TrainTransform, sample_boxes
from benchmark.data.loader import StoredImages
from benchmark.data.store import PixelStore, storage_size

CFG = dict(input_size=(3, 224, 224), interpolation="bicubic", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
           crop_pct=0.875, crop_mode="center")
ONE_LEVEL = 1 / 255 / 0.224  # one uint8 grey level in normalised units (smallest std)


def _stored(tmp_path, data, idx, res, cfg=CFG):
    size, scale = storage_size(cfg, res)
    store = PixelStore(tmp_path / "px")
    key = {"idx": list(map(int, idx)), "scale": scale, "interp": cfg["interpolation"]}
    got = store.get(key, data, idx, scale, cfg["interpolation"])
    view = StoredImages(got.pixels, torch.zeros(len(idx), dtype=torch.long), np.arange(len(idx)),
                        EvalTransform(size, cfg["mean"], cfg["std"]))
    return store, key, got, view


def _pil_reference(data, idx, res, cfg=CFG):
    """timm's own PIL eval transform, image by image: the reference the stored path must reproduce."""
    size = res or cfg["input_size"][-1]
    tf = timm.data.create_transform(input_size=(3, size, size), interpolation=cfg["interpolation"], mean=cfg["mean"],
                                    std=cfg["std"], crop_pct=cfg["crop_pct"], crop_mode=cfg.get("crop_mode"),
                                    is_training=False)
    return torch.stack([tf(data[int(i)][0].convert("RGB")) for i in idx])  # grayscale -> 3 channels, as stored


def _device_batch(view, device):
    return torch.cat([x for x, _ in view.batches(64, device)]).cpu()


def test_array_source_eval_pixels_match_timm_pil(tmp_path, device):
    data = load_source(DatasetEntry(name="m", packaged="mnist5k")).splits["train"].data
    idx = np.arange(16)
    _, _, _, view = _stored(tmp_path, data, idx, 64)
    ours, pil = _device_batch(view, device), _pil_reference(data, idx, 64)
    assert ours.shape == pil.shape == (16, 3, 64, 64)
    assert (ours - pil).abs().max() <= ONE_LEVEL + 1e-5 and (ours - pil).abs().mean() < 0.01 * ONE_LEVEL


def test_pil_source_non_square_images_equal_timm_exactly(tmp_path, device):
    """Folder images (non-square PNGs): the store is PIL's own Resize + crop, so eval pixels are timm's exactly."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "d" / "train" / c).mkdir(parents=True)
        for i in range(3):
            arr = rng.integers(0, 256, size=(50 + 7 * i, 80, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "d" / "train" / c / f"{i}.png")
    data = load_source(DatasetEntry(name="f", folder=str(tmp_path / "d"))).splits["train"].data
    idx = np.arange(6)
    cfg = {**CFG, "crop_pct": 0.9, "interpolation": "bilinear"}
    _, _, _, view = _stored(tmp_path, data, idx, 40, cfg)
    assert torch.allclose(_device_batch(view, device), _pil_reference(data, idx, 40, cfg), atol=1e-5)


def test_store_written_once_reused_atomic_and_keyed(tmp_path):
    data = load_source(DatasetEntry(name="t", packaged="digits")).splits["train"].data
    idx = np.arange(50)
    store, key, first, _ = _stored(tmp_path, data, idx, 32)
    assert first.decode and first.decode["images"] == 50 and store.decoded == 1
    again = store.get(key, data, idx, first.pixels.shape[-1], "bicubic")
    assert again.decode is None and store.decoded == 1 and np.array_equal(again.pixels, first.pixels)
    assert not list((tmp_path / "px").glob("*.tmp*"))  # the temp file was renamed into place
    other = {**key, "scale": 40}
    assert store.path(other) != store.path(key)
    expected = np.array(first.pixels)
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"truncated")
    bad.replace(store.path(key))  # a corrupt file (new inode: live memory maps of the old one stay valid)
    rebuilt = store.get(key, data, idx, first.pixels.shape[-1], "bicubic")
    assert rebuilt.decode and np.array_equal(rebuilt.pixels, expected)


def test_boxes_follow_random_resized_crop_distribution():
    """Area fraction and log aspect ratio of our vectorised draws vs torchvision's get_params (KS tests)."""
    from torchvision.transforms import RandomResizedCrop
    h, w, n = 48, 64, 3000
    ours = sample_boxes(n, h, w, (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0)).double()
    torch.manual_seed(1)
    img = torch.zeros(3, h, w)
    ref = torch.tensor([RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]).double()
    for a, b in ((ours, ref),):
        area_p = stats.ks_2samp((a[:, 2] * a[:, 3]) / (h * w), (b[:, 2] * b[:, 3]) / (h * w)).pvalue
        ratio_p = stats.ks_2samp(torch.log(a[:, 3] / a[:, 2]), torch.log(b[:, 3] / b[:, 2])).pvalue
        top_p = stats.ks_2samp(a[:, 0] / (h - a[:, 2] + 1), b[:, 0] / (h - b[:, 2] + 1)).pvalue
        assert min(area_p, ratio_p, top_p) > 0.001, (area_p, ratio_p, top_p)
    assert (ours[:, 0] >= 0).all() and (ours[:, 0] + ours[:, 2] <= h).all() and (ours[:, 3] + ours[:, 1] <= w).all()
    # The centre fallback when no attempt fits: ratio range outside what a 10 x 1 image allows.
    fb = sample_boxes(5, 10, 1, (0.99, 1.0), (4.0, 5.0), torch.Generator().manual_seed(0))
    assert (fb[:, 2] == 0).all() or (fb[:, 3] == 1).all()


def test_train_transform_per_sample_crops_flips_and_device(device):
    x = torch.arange(36 * 36, dtype=torch.float32).view(1, 1, 36, 36).expand(64, 3, 36, 36)
    x = (x % 251).to(torch.uint8).to(device)
    tf = TrainTransform(32, CFG["mean"], CFG["std"], scale=(0.08, 1.0))
    out = tf(x, torch.Generator().manual_seed(0))
    assert out.shape == (64, 3, 32, 32) and out.device.type == torch.device(device).type
    flat = out.flatten(1).cpu()
    assert len({tuple(r[:40].tolist()) for r in flat}) == 64  # every image of the batch got its own crop
    flips = torch.rand(20000, generator=torch.Generator().manual_seed(5)) < 0.5
    assert stats.binomtest(int(flips.sum()), 20000, 0.5).pvalue > 0.001
    same = tf(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)  # seeded: the same draws again


def test_full_box_crop_equals_bilinear_resize(device):
    """scale = ratio = 1 and no flip: the crop is the whole image, and roi_align's resize equals
    torchvision's bilinear resize (upscale) to within a grey level."""
    from torchvision.transforms.v2 import functional as TF
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 24, 24), generator=g, dtype=torch.uint8)
    tf = TrainTransform(40, (0, 0, 0), (1, 1, 1), scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
    ours = tf(x.to(device), torch.Generator().manual_seed(0)).cpu() * 255  # std 1/255 units back to levels
    ref = TF.resize(x.float(), [40, 40], interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
    assert (ours - ref).abs().max() <= 1.0 + 1e-4


@pytest.mark.parametrize("resize", ["bilinear", "bicubic", "random"])
def test_per_sample_resize_cuts_the_same_boxes_as_roi_align(resize):
    """train_resize bilinear/bicubic/random: the same seeded boxes and flips as the batched roi_align path; on a
    smooth image the crops agree with it to a few grey levels (only the interpolation differs)."""
    yy, xx = torch.meshgrid(torch.arange(36.0), torch.arange(36.0), indexing="ij")
    smooth = (127 + 100 * torch.sin(xx / 6) * torch.cos(yy / 7)).round().to(torch.uint8)
    x = smooth.expand(16, 3, 36, 36).contiguous()
    base = TrainTransform(32, (0, 0, 0), (1, 1, 1), scale=(0.3, 1.0))
    other = TrainTransform(32, (0, 0, 0), (1, 1, 1), scale=(0.3, 1.0), resize=resize)
    a = base(x, torch.Generator().manual_seed(3)) * 255
    b = other(x, torch.Generator().manual_seed(3)) * 255
    assert b.shape == a.shape and (a - b).abs().mean() < 2.0 and (a - b).abs().max() < 12
    with pytest.raises(ValueError, match="roi_align, bilinear"):
        TrainTransform(32, (0, 0, 0), (1, 1, 1), resize="nearest")
