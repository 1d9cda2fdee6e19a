"""Pixels once: each (dataset, split, indices, storage size) is decoded a single time into a uint8 array on disk
[N, 3, S, S], memory-mapped and shared by every model and protocol that needs the same pixels.

The storage size S is the eval path's resize size, floor(resolution / crop_pct): the stored image is timm's
`Resize(S)` (shorter side, the model's interpolation, antialiased) followed by a centre S x S crop, so the eval
transform on the device is a centre crop and a normalisation, and training crops are drawn from the same square.
PIL sources (folders, torchvision datasets) are resized by PIL itself, i.e. exactly timm's eval pixels; in-memory
uint8 arrays by torchvision's antialiased tensor resize in whole batches (within one grey level of PIL, tested).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..atomic import is_disk_full, no_space, temp_path, write_text
from ..config import stable_hash


def storage_size(data_config: dict, resolution: int | None) -> tuple[int, int]:
    """(crop size, storage size) for a model's data config at a dataset's resolution."""
    size = resolution or data_config["input_size"][-1]
    return size, math.floor(size / data_config["crop_pct"])


class _PilResized(Dataset):
    """PIL decode + Resize(S) + CenterCrop(S) per image, in DataLoader workers; uint8 CHW out."""

    def __init__(self, base, indices, size: int, interpolation: str):
        from torchvision import transforms as T
        from torchvision.transforms import InterpolationMode
        self.base, self.indices = base, np.asarray(indices)
        self.tf = T.Compose([T.Resize(size, interpolation=InterpolationMode(interpolation)), T.CenterCrop(size),
                             T.PILToTensor()])

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        img, _ = self.base[int(self.indices[i])]
        if isinstance(img, np.ndarray):
            from PIL import Image
            img = Image.fromarray(img)
        return self.tf(img.convert("RGB"))  # grayscale sources become 3-channel here


def _array_batches(images: np.ndarray, indices, size: int, interpolation: str, batch: int = 256):
    """Batched antialiased tensor resize of in-memory uint8 arrays (N,H,W) or (N,H,W,3): milliseconds per batch
    where per-image PIL calls on the main thread cost ~30 % of extraction time on a 2-core CPU."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF
    mode = InterpolationMode(interpolation)
    for start in range(0, len(indices), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[np.asarray(indices[start:start + batch])]))
        x = x.unsqueeze(1).expand(-1, 3, -1, -1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
        if x.shape[-2:] != (size, size):
            x = TF.center_crop(TF.resize(x, [size], interpolation=mode, antialias=True), [size, size])
        yield x.contiguous()


def is_array_source(data) -> bool:
    images = getattr(data, "images", None)
    return isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim in (3, 4)


@dataclass
class Stored:
    pixels: np.ndarray  # uint8 [N, 3, S, S], memory-mapped read-only
    decode: dict | None  # {"images", "seconds", "images_per_s"} when this call decoded them, else None


def _preallocate(path: Path) -> None:
    """Reserve the memmap's blocks now: a sparse file on a full disk fails only when a page is written through the
    mapping, and that failure is SIGBUS (the process dies), not an exception. Filesystems without fallocate
    (some NFS) keep the sparse file."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as e:
        if is_disk_full(e):
            raise
    finally:
        os.close(fd)


class PixelStore:
    """`.npy` files named by the hash of what determines the pixels, written atomically (temp name + replace)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.decoded = 0  # splits decoded by this process (tests: a re-run decodes nothing)

    def path(self, key: dict) -> Path:
        return self.root / f"{stable_hash(key, 32)}.npy"

    def get(self, key: dict, data, indices, size: int, interpolation: str, num_workers: int = 0,
            desc: str = "decode") -> Stored:
        path = self.path(key)
        if path.exists():
            try:
                pixels = np.load(path, mmap_mode="r")
                if pixels.shape == (len(indices), 3, size, size):
                    return Stored(pixels, None)
            except (OSError, ValueError):
                pass  # a corrupt or truncated file is rebuilt, not fatal
        t0 = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)  # a killed writer's temp is removed by the next run (leftovers.py)
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(indices), 3, size, size))
            _preallocate(tmp)
            if is_array_source(data):
                batches = _array_batches(data.images, indices, size, interpolation)
            else:
                batches = DataLoader(_PilResized(data, indices, size, interpolation), batch_size=64,
                                     num_workers=num_workers)
            pos = 0
            for x in tqdm(batches, desc=desc, leave=False, disable=None):
                out[pos:pos + len(x)] = x.numpy()
                pos += len(x)
            out.flush()
            del out
            os.replace(tmp, path)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if is_disk_full(e):
                raise no_space(path) from None
            raise
        write_text(path.with_suffix(".key"), json.dumps({"key": key}, default=str))  # for humans; not *.json, which records use
        seconds = time.perf_counter() - t0
        self.decoded += 1
        return Stored(np.load(path, mmap_mode="r"),
                      {"images": len(indices), "seconds": round(seconds, 3),
                       "images_per_s": round(len(indices) / max(seconds, 1e-9), 1)})
