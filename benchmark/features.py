"""Feature extraction, once per (model, dataset, split), cached on disk under a hash of what determines it."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .atomic import torch_save, write_text
from .config import stable_hash
from .errors import CellError
from .stopping import check as check_stop


def indices_digest(indices) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def autocast(device: torch.device, enabled: bool = True):
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def channels_last(device: torch.device) -> bool:
    """channels_last on CUDA (tensor cores read NHWC); on CPU we leave the layout to oneDNN, which reorders itself."""
    return device.type == "cuda"


@torch.inference_mode()
def extract(module, images, batch_size=128, device="cpu", amp=True, desc="features", head=None):
    """Pooled features of every image of `images` (a `StoredImages` view), in order: eval mode, batched, on the
    device; bf16 autocast + channels_last on CUDA. Features stay on the device until the end (no per-batch sync).
    `head` (optional, the source classifier on pooled features): also returns softmax(head(features)) in
    float32, computed outside autocast, as a third element."""
    device = torch.device(device)
    module = module.eval().to(device)
    nhwc = channels_last(device)
    if nhwc:
        module = module.to(memory_format=torch.channels_last)
    feats, labels, probs = [], [], []
    if head is not None:
        head = head.eval().to(device).float()
    with autocast(device, amp):
        for x, y in tqdm(images.batches(batch_size, device), desc=desc, leave=False, disable=None):
            check_stop()  # a stop signal whose exception CPython dropped (see stopping.py)
            if nhwc:
                x = x.contiguous(memory_format=torch.channels_last)
            f = module(x).float()
            feats.append(f)
            labels.append(y)
            if head is not None:
                with torch.autocast(device.type, enabled=False):
                    probs.append(torch.softmax(head(f), dim=1))
    if head is not None:
        return torch.cat(feats).cpu(), torch.cat(labels).cpu(), torch.cat(probs).cpu()
    return torch.cat(feats).cpu(), torch.cat(labels).cpu()


def feature_health(features: torch.Tensor) -> dict:
    """Counts of degenerate structure in [N, D] features: all-zero (dead) columns, constant columns (dead ones
    included), all-zero rows. Dead features (e.g. EfficientNet-Lite2 at 32 px) make several proxies undefined;
    the counts go into each proxy record and the report lists the models that have them."""
    lo, hi = torch.aminmax(features, dim=0)
    row_lo, row_hi = torch.aminmax(features, dim=1) if features.shape[1] else (features.sum(1), features.sum(1))
    return {"dead_columns": int(((lo == 0) & (hi == 0)).sum()), "constant_columns": int((lo == hi).sum()),
            "zero_rows": int(((row_lo == 0) & (row_hi == 0)).sum()), "dim": int(features.shape[1]),
            "n": int(features.shape[0])}


class FeatureCache:
    """Atomic .pt files named by the hash of their key; counts what it computed, for tests and logs."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.computed = 0
        self.hits = 0

    def path(self, key: dict) -> Path:
        return self.root / f"{stable_hash(key, 32)}.pt"

    def load(self, key: dict):
        """(features, labels, cost) or None; cost = {'seconds', 'images'} of the pass that made the file."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return None  # a corrupt file is recomputed, not fatal
        self.hits += 1
        return blob["features"], blob["labels"], blob.get("cost", {})

    def model_info(self, key: dict) -> dict | None:
        """{'model_identity', 'model_notes'} of the model that made the cached features (stored beside them, so a
        record computed from cache names its weights as exactly as one that loaded them), or None."""
        try:
            return json.loads(self.path(key).with_suffix(".model").read_text())
        except (OSError, ValueError):
            return None

    def save_model_info(self, key: dict, info: dict) -> None:
        write_text(self.path(key).with_suffix(".model"), json.dumps(info, default=str))

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

    def save(self, key: dict, features: torch.Tensor, labels: torch.Tensor, cost: dict | None = None,
             source_probs=False, model_info: dict | None = None) -> None:
        """`source_probs`: the source classifier's probabilities, None when the model has no classifier, or
        False (not known: nothing recorded). `cost`: {'seconds', 'images'} of the pass that made them."""
        if not torch.isfinite(features).all():
            raise CellError(f"features for {key.get('model_name')} on {key.get('dataset_name')}/{key.get('split')} "
                            f"contain NaN/inf; check the model's normalisation or weights")
        blob = {"features": features, "labels": labels, "key": key, "cost": cost or {},
                "health": feature_health(features)}  # beside the features: readable without recomputing
        if source_probs is not False:
            blob["source_probs"] = source_probs
        if model_info is not None:  # first, so features on disk always have theirs
            self.save_model_info(key, model_info)
        torch_save(blob, self.path(key))
        self.computed += 1
