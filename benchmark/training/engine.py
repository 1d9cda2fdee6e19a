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

from ..atomic import torch_save
from ..data.loader import as_images
from ..features import autocast, channels_last
from ..precision import choose as choose_precision
from ..seeding import derive_seed
from ..stopping import check as check_stop
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
def evaluate(model: nn.Module, images, batch_size: int, device, amp=True, nhwc=None) -> dict:
    """top1 and mean per-class accuracy; predictions stay on the device until the end (no per-batch sync)."""
    device = torch.device(device)
    nhwc = channels_last(device) if nhwc is None else nhwc
    model.eval()
    preds, labels = [], []
    with autocast(device, amp):
        for x, y in as_images(images).batches(batch_size, device):
            if nhwc:
                x = x.contiguous(memory_format=torch.channels_last)
            preds.append(model(x).argmax(1))
            labels.append(y)
    return accuracies(torch.cat(preds).cpu(), torch.cat(labels).cpu())


def fit(setup: Setup, train, val, *, epochs: int, batch_size: int, momentum: float = 0.9,
        warmup_epochs: float = 0, device="cpu", precision="auto", compile=False, seed=0,
        ckpt: Path | None = None, eval_batch_size=None, log=None) -> dict:
    """Train for `epochs`, validating after each; resumes from `ckpt` if it holds a partial run.

    `train`/`val`: `StoredImages` views (augmentation on the device) or plain Datasets. Shuffling, augmentation
    and dropout draw from generators seeded by (seed, epoch), so a run resumed at an epoch boundary is
    bit-identical to an uninterrupted one. The loop never waits on the device inside an epoch: the loss is
    checked for divergence once per epoch."""
    device = torch.device(device)
    model = setup.model.to(device)
    freeze_all_but(setup)
    opt = torch.optim.SGD(setup.param_groups, momentum=momentum)
    train = as_images(train)
    loader = train.batches(batch_size, device, shuffle=True, drop_last=len(train) > batch_size, seed=seed)
    steps_per_epoch = len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, cosine_lambda(epochs * steps_per_epoch, int(warmup_epochs * steps_per_epoch)))
    curve, start, images, train_time = [], 0, 0, 0.0
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)  # our own file: tensors and numbers only
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        curve, start, images, train_time = state["curve"], state["epoch"] + 1, state["images"], state["train_time"]
    model.train()
    setup.set_modes(model)
    probe_x, probe_y = next(iter(loader)) if device.type == "cuda" else (torch.empty(0), None)  # no side effects:
    choice = choose_precision(precision, model, probe_x, probe_y, train=True)  # each iteration re-seeds itself
    bf16, nhwc = choice["precision"] == "bf16", choice["channels_last"]
    if nhwc:
        model = model.to(memory_format=torch.channels_last)
    step_fn = torch.compile(model) if compile else model
    compile_s = None
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start, epochs):
        torch.manual_seed(derive_seed("epoch", seed, epoch))  # dropout / drop-path draws of this epoch
        loader.set_epoch(epoch)
        model.train()
        setup.set_modes(model)
        t0 = time.perf_counter()
        loss = torch.zeros((), device=device)
        for x, y in loader:
            check_stop()  # a stop signal whose exception CPython dropped (see stopping.py)
            if nhwc:
                x = x.contiguous(memory_format=torch.channels_last)
            t_step = time.perf_counter() if compile and compile_s is None else None
            with autocast(device, bf16):
                loss = loss_fn(step_fn(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            images += len(y)
            if t_step is not None:
                _sync(device)
                compile_s = time.perf_counter() - t_step  # the first step carries the compilation
        _sync(device)
        train_time += time.perf_counter() - t0
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training diverged (loss {loss.item()}) at epoch {epoch}; lower the lr")
        val_acc = evaluate(model, val, eval_batch_size or batch_size, device, bf16, nhwc)
        curve.append(round(val_acc["top1"], 4))
        if ckpt is not None:
            torch_save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "curve": curve, "epoch": epoch, "images": images, "train_time": train_time}, ckpt)
        if log:
            log(f"      epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, val top1 {val_acc['top1']:.2f}")
    if compile and compile_s is not None:
        train_time -= compile_s  # images/s without the one-off compilation, which is reported on its own
    return {"val_curve": curve, "val_top1": curve[-1] if curve else float("nan"),
            "images_per_s": images / train_time if train_time > 0 else None, "batch_size": batch_size,
            "precision": choice, "compile_s": compile_s, "images": images,
            "notes": [f"resumed at epoch {start + 1} from its checkpoint"] if start else []}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()
