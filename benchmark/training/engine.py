"""The one training engine every protocol runs on.

A protocol hands over a `Setup` (model, parameter groups, how normalisation layers behave); the engine does
SGD + momentum with a per-step cosine schedule and optional linear warm-up, bf16 autocast and channels_last on
CUDA, per-epoch validation, per-epoch checkpoints (resume after a kill) and halving the batch on CUDA OOM.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..atomic import torch_save
from ..features import autocast
from ..proxies.base import accuracies


@dataclass
class Setup:
    model: nn.Module  # images -> logits; has .features(x) for penultimate features
    param_groups: list  # torch.optim param groups, each with 'name', 'lr', 'weight_decay'
    set_modes: Callable[[nn.Module], None]  # after model.train(): put frozen parts back in eval mode
    notes: list = field(default_factory=list)


def trained_fraction(setup: Setup) -> dict:
    trained = {id(p) for g in setup.param_groups for p in g["params"]}
    backbone = list(setup.model.backbone.parameters())
    head_ids = {id(p) for p in setup.model.head.parameters()}
    n_bb = sum(p.numel() for p in backbone)
    n_bb_trained = sum(p.numel() for p in backbone if id(p) in trained and id(p) not in head_ids)
    n_all_trained = sum(p.numel() for p in setup.model.parameters() if id(p) in trained)
    return {"trained_backbone_params": n_bb_trained, "backbone_params": n_bb,
            "trained_fraction_backbone": n_bb_trained / n_bb if n_bb else 0.0,
            "trained_params_total": n_all_trained}


def freeze_all_but(setup: Setup) -> None:
    trained = {id(p) for g in setup.param_groups for p in g["params"]}
    for p in setup.model.parameters():
        p.requires_grad_(id(p) in trained)


def cosine_lambda(total_steps: int, warmup_steps: int):
    def f(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return f


@torch.no_grad()
def evaluate(model: nn.Module, dataset, batch_size: int, device, num_workers=0, amp=True) -> dict:
    model.eval()
    preds, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    with autocast(torch.device(device), amp):
        for x, y in loader:
            x = _to(x, device)
            preds.append(model(x).argmax(1).cpu())
            labels.append(y)
    return accuracies(torch.cat(preds), torch.cat(labels))


def _to(x, device):
    device = torch.device(device)
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" and x.dim() == 4 else x


def fit(setup: Setup, train_ds, val_ds, *, epochs: int, batch_size: int, momentum: float = 0.9,
        warmup_epochs: float = 0, device="cpu", amp=True, seed=0, num_workers=0, ckpt: Path | None = None,
        eval_batch_size=None, log=None) -> dict:
    """Train for `epochs`, validating after each; resumes from `ckpt` if it holds a partial run."""
    device = torch.device(device)
    model = setup.model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    freeze_all_but(setup)
    opt = torch.optim.SGD(setup.param_groups, momentum=momentum)
    g = torch.Generator().manual_seed(seed)
    drop_last = len(train_ds) > batch_size
    loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, drop_last=drop_last, generator=g,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    steps_per_epoch = len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, cosine_lambda(epochs * steps_per_epoch, int(warmup_epochs * steps_per_epoch)))
    curve, start, images, train_time = [], 0, 0, 0.0
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        g.set_state(state["generator"])
        curve, start, images, train_time = state["curve"], state["epoch"] + 1, state["images"], state["train_time"]
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start, epochs):
        model.train()
        setup.set_modes(model)
        t0 = time.perf_counter()
        for x, y in loader:
            x, y = _to(x, device), y.to(device, non_blocking=True)
            with autocast(device, amp):
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            images += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_time += time.perf_counter() - t0
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training diverged (loss {loss.item()}) at epoch {epoch}; lower the lr")
        val = evaluate(model, val_ds, eval_batch_size or batch_size, device, num_workers, amp)
        curve.append(round(val["top1"], 4))
        if ckpt is not None:
            torch_save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                          "generator": g.get_state(), "curve": curve, "epoch": epoch, "images": images,
                          "train_time": train_time}, ckpt)
        if log:
            log(f"      epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, val top1 {val['top1']:.2f}")
    return {"val_curve": curve, "val_top1": curve[-1] if curve else float("nan"),
            "images_per_s": images / train_time if train_time else None, "batch_size": batch_size,
            "notes": [f"resumed at epoch {start + 1} from its checkpoint"] if start else []}


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()
