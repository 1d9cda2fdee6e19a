"""Eval transform and training augmentation on whole uint8 batches, on the device the batch lives on.

Training: per-sample RandomResizedCrop (torchvision's sampling rule: 10 attempts of scale x log-uniform ratio,
then the centre fallback), horizontal flip, normalisation. The crops of one batch are cut and resized by a single
`torchvision.ops.roi_align` call (adaptive sampling averages ceil(box/out) points per output pixel, i.e. an
antialiased downscale and a bilinear upscale) instead of B separate resize calls: one kernel launch per batch on
a GPU, measured ~99 % of a bare training step in the spike of issue 8.
Random draws come from an explicit CPU `torch.Generator` (boxes and flips are a few numbers per image), so a run
is reproducible on any device and a resumed epoch redraws exactly what the uninterrupted one drew.
"""
from __future__ import annotations

import math

import torch


def sample_boxes(n: int, height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 generator: torch.Generator | None = None, attempts: int = 10) -> torch.Tensor:
    """[n, 4] integer boxes (top, left, h, w) drawn as `torchvision.transforms.RandomResizedCrop.get_params`
    draws them, vectorised over samples and attempts."""
    area = height * width
    g = generator
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, attempts, generator=g, dtype=torch.float64))
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * torch.rand(n, attempts, generator=g, dtype=torch.float64))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok.any(1), ok.double().argmax(1), torch.full((n,), -1, dtype=torch.long))
    u_top = torch.rand(n, generator=g, dtype=torch.float64)
    u_left = torch.rand(n, generator=g, dtype=torch.float64)
    rows = torch.arange(n)
    hh, ww = h[rows, first.clamp_min(0)], w[rows, first.clamp_min(0)]
    # Centre fallback when no attempt fits (torchvision's rule, with the ratio clamped to its range).
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    fallback = first < 0
    hh = torch.where(fallback, torch.full_like(hh, fh), hh)
    ww = torch.where(fallback, torch.full_like(ww, fw), ww)
    top = torch.floor(u_top * (height - hh + 1))
    left = torch.floor(u_left * (width - ww + 1))
    top = torch.where(fallback, torch.div(height - hh, 2, rounding_mode="floor"), top)
    left = torch.where(fallback, torch.div(width - ww, 2, rounding_mode="floor"), left)
    return torch.stack([top, left, hh, ww], 1).long()


_NORMALISERS: dict = {}  # (mean, std, device) -> tensors: built once per device, not copied every batch


def _normaliser(mean, std, like: torch.Tensor):
    key = (mean, std, str(like.device))
    if key not in _NORMALISERS:
        m = torch.as_tensor(mean, dtype=torch.float32, device=like.device).view(1, 3, 1, 1) * 255
        s = torch.as_tensor(std, dtype=torch.float32, device=like.device).view(1, 3, 1, 1) * 255
        _NORMALISERS[key] = (m, s)
    return _NORMALISERS[key]


class EvalTransform:
    """timm's eval transform on a stored batch: centre crop `size` out of the stored Resize(S) square, normalise."""

    def __init__(self, size: int, mean, std):
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)

    def __call__(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        s = x.shape[-1]
        if s != self.size:
            o = int(round((s - self.size) / 2.0))  # torchvision's center_crop offset
            x = x[..., o:o + self.size, o:o + self.size]
        m, sd = _normaliser(self.mean, self.std, x)
        return (x.float() - m) / sd


RESIZE_MODES = ("roi_align", "bilinear", "bicubic", "random")


class TrainTransform:
    """RandomResizedCrop(size, scale, ratio) + horizontal flip + normalise, per sample, batched.

    `resize`: roi_align (one batched call, see the module docstring) or torchvision's antialiased
    `resized_crop` per sample with bilinear, bicubic or, as timm's default `--train-interpolation random`, either
    drawn per sample."""

    def __init__(self, size: int, mean, std, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip: float = 0.5,
                 resize: str = "roi_align"):
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got '{resize}'")
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self.scale, self.ratio, self.hflip, self.resize = tuple(scale), tuple(ratio), hflip, resize

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, _, h, w = x.shape
        boxes = sample_boxes(n, h, w, self.scale, self.ratio, generator)
        flip = torch.rand(n, generator=generator) < self.hflip
        if self.resize == "roi_align":
            from torchvision.ops import roi_align
            top, left, bh, bw = boxes.unbind(1)
            rois = torch.stack([torch.arange(n, dtype=torch.float64), left, top, left + bw, top + bh], 1)
            rois = rois.to(device=x.device, dtype=torch.float32)
            out = roi_align(x.float(), rois, output_size=(self.size, self.size), spatial_scale=1.0,
                            sampling_ratio=-1, aligned=True)
        else:
            out = self._per_sample(x, boxes, generator)
        flip = flip.to(x.device).view(n, 1, 1, 1)
        out = torch.where(flip, out.flip(3), out)
        m, sd = _normaliser(self.mean, self.std, out)
        return (out - m) / sd

    def _per_sample(self, x, boxes, generator):
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as TF
        modes = [self.resize] * len(x)
        if self.resize == "random":
            pick = torch.rand(len(x), generator=generator) < 0.5
            modes = ["bilinear" if p else "bicubic" for p in pick.tolist()]
        out = [TF.resized_crop(x[i:i + 1].float(), *boxes[i].tolist(), [self.size, self.size],
                               interpolation=InterpolationMode(modes[i]), antialias=True)
               for i in range(len(x))]
        return torch.cat(out).clamp_(0, 255)  # bicubic overshoots; PIL clamps to uint8
