"""Feature extraction, once per (model, dataset, split), cached on disk under a hash of what determines it."""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import numpy as np
import timm
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .atomic import torch_save
from .config import stable_hash
from .errors import CellError


class TransformedSubset(Dataset):
    def __init__(self, base, indices, transform, label_map=None):
        self.base, self.indices, self.transform = base, np.asarray(indices), transform
        self.label_map = label_map  # old label -> new label (extra test sets in another label space)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        img, label = self.base[int(self.indices[i])]
        label = int(label) if self.label_map is None else int(self.label_map[int(label)])
        return self.transform(img.convert("RGB")), label  # grayscale sources become 3-channel here


def eval_transform(data_config: dict, resolution: int | None):
    size = resolution or data_config["input_size"][-1]
    return timm.data.create_transform(input_size=(3, size, size), interpolation=data_config["interpolation"],
                                      mean=data_config["mean"], std=data_config["std"],
                                      crop_pct=data_config["crop_pct"], crop_mode=data_config.get("crop_mode"),
                                      is_training=False)


class ArrayBatches(Dataset):
    """Uint8 CHW tensors of an in-memory array source, for `batched_eval_transform` (3 channels, as RGB)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices):
        self.images, self.labels, self.indices = images, labels, np.asarray(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        j = int(self.indices[i])
        img = torch.from_numpy(np.array(self.images[j]))  # a copy: source arrays may be read-only buffers
        img = img.unsqueeze(0).expand(3, -1, -1) if img.dim() == 2 else img.permute(2, 0, 1)
        return img, int(self.labels[j])


def batched_eval_transform(data_config: dict, resolution: int | None):
    """timm's eval transform (Resize(floor(size / crop_pct)) -> CenterCrop -> Normalize) on whole uint8
    batches with torchvision's tensor ops. Per-image PIL transforms on the main thread cost ~30 % of
    extraction throughput on a 2-core CPU; this runs in a few ms per batch. Antialiased bicubic/bilinear
    tensor resizing is torchvision's PIL-matching path; the cache key records which pipeline made a file."""
    import math

    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF
    size = resolution or data_config["input_size"][-1]
    scale = math.floor(size / data_config["crop_pct"])
    mode = InterpolationMode(data_config["interpolation"])
    mean = torch.tensor(data_config["mean"]).view(1, 3, 1, 1) * 255
    std = torch.tensor(data_config["std"]).view(1, 3, 1, 1) * 255

    def apply(batch: torch.Tensor) -> torch.Tensor:
        x = TF.resize(batch, [scale], interpolation=mode, antialias=True)
        x = TF.center_crop(x, [size, size])
        return (x.float() - mean) / std
    return apply


def indices_digest(indices) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def autocast(device: torch.device, enabled: bool = True):
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def extract(module, dataset, batch_size=128, device="cpu", num_workers=0, amp=True, desc="features",
            batch_transform=None, head=None):
    """Pooled features of every item of `dataset`, in order: eval mode, batched, bf16 + channels_last on CUDA.
    `batch_transform` (optional) runs on each collated batch, e.g. `batched_eval_transform`.
    `head` (optional, the source classifier on pooled features): also returns softmax(head(features)) in
    float32, computed outside autocast, as a third element."""
    device = torch.device(device)
    module = module.eval().to(device)
    cuda = device.type == "cuda"
    if cuda:
        module = module.to(memory_format=torch.channels_last)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=cuda)
    feats, labels, probs = [], [], []
    if head is not None:
        head = head.eval().to(device).float()
    with autocast(device, amp):
        for x, y in tqdm(loader, desc=desc, leave=False, disable=None):
            x = x.to(device, non_blocking=True)
            if batch_transform is not None:
                x = batch_transform(x)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            f = module(x).float()
            feats.append(f.cpu())
            labels.append(y)
            if head is not None:
                with torch.autocast(device.type, enabled=False):
                    probs.append(torch.softmax(head(f), dim=1).cpu())
    if head is not None:
        return torch.cat(feats), torch.cat(labels), torch.cat(probs)
    return torch.cat(feats), torch.cat(labels)


class FeatureCache:
    """Atomic .pt files named by the hash of their key; counts what it computed, for tests and logs."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.computed = 0
        self.hits = 0

    def path(self, key: dict) -> Path:
        return self.root / f"{stable_hash(key, 32)}.pt"

    def load(self, key: dict):
        path = self.path(key)
        if not path.exists():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return None  # a corrupt file is recomputed, not fatal
        self.hits += 1
        return blob["features"], blob["labels"]

    def source_probs(self, key: dict):
        """(True, probs or None) when the file records the source classifier's output (None: the model has
        none); (False, None) for files written before probabilities were stored, or no file."""
        path = self.path(key)
        if not path.exists():
            return False, None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return False, None
        return ("source_probs" in blob), blob.get("source_probs")

    def save(self, key: dict, features: torch.Tensor, labels: torch.Tensor, source_probs=False) -> None:
        """`source_probs`: the source classifier's probabilities, None when the model has no classifier, or
        False (not known: nothing recorded)."""
        if not torch.isfinite(features).all():
            raise CellError(f"features for {key.get('model_name')} on {key.get('dataset_name')}/{key.get('split')} "
                            f"contain NaN/inf; check the model's normalisation or weights")
        blob = {"features": features, "labels": labels, "key": key}
        if source_probs is not False:
            blob["source_probs"] = source_probs
        torch_save(blob, self.path(key))
        self.computed += 1
