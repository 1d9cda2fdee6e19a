"""Cheap diagnostics once training ends: feature distortion, relative parameter change, NC1 of trained features."""
from __future__ import annotations

import re
from collections import defaultdict

import torch
import torch.nn.functional as F

from ..data.loader import as_images
from ..features import autocast
from ..proxies.collapse import nc1_value


@torch.no_grad()
def penultimate(model, images, batch_size, device, amp=True):
    """Penultimate features of a `StoredImages` view (or Dataset), kept on the device until the end."""
    device = torch.device(device)
    model.eval()
    feats, labels = [], []
    with autocast(device, amp):
        for x, y in as_images(images).batches(batch_size, device):
            feats.append(model.features(x).float())
            labels.append(y)
    return torch.cat(feats).cpu(), torch.cat(labels).cpu()


def feature_distortion(before: torch.Tensor, after: torch.Tensor) -> dict:
    cos = F.cosine_similarity(after, before, dim=1)
    rel = (after - before).norm(dim=1) / before.norm(dim=1).clamp_min(1e-12)
    return {"cosine_similarity": cos.mean().item(), "relative_l2": rel.mean().item()}


def _stage(name: str) -> str:
    m = re.match(r"(layer\d+|blocks\.\d+|stages\.\d+|features\.\d+)", name)
    return m.group(1) if m else name.split(".")[0]


def parameter_change(before: dict, after: dict) -> dict:
    """‖W_after − W_before‖/‖W_before‖ per tensor (parameters and BN statistics), and its mean per stage."""
    per_tensor, stages = {}, defaultdict(list)
    for name, w0 in before.items():
        if not torch.is_floating_point(w0) or name not in after:
            continue
        w1 = after[name].detach().float().cpu()
        w0 = w0.float().cpu()
        if w0.norm() == 0:  # e.g. a fresh BN's running_mean: a relative change is undefined, not huge
            per_tensor[name] = None
            continue
        change = ((w1 - w0).norm() / w0.norm()).item()
        per_tensor[name] = round(change, 6)
        stages[_stage(name)].append(change)
    return {"per_stage": {s: sum(v) / len(v) for s, v in stages.items()}, "per_tensor": per_tensor}


def diagnostics(model, pristine, test_ds, train_ds, batch_size, device) -> dict:
    """`pristine`: the untrained backbone; its features go through the same pipeline as the trained ones."""
    from .surgery import WithHead
    test_before, _ = penultimate(WithHead(pristine, torch.nn.Identity()).to(device), test_ds, batch_size, device)
    test_after, _ = penultimate(model, test_ds, batch_size, device)
    train_after, train_y = penultimate(model, train_ds, batch_size, device)
    nc1, _ = nc1_value(train_after, train_y) if len(torch.unique(train_y)) > 1 else (float("nan"), 0)
    return {"feature_distortion": feature_distortion(test_before, test_after),
            "parameter_change": parameter_change(pristine.state_dict(), model.backbone.state_dict()),
            "nc1_trained_train": nc1}
