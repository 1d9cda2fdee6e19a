"""bf16 + channels_last, or fp32: chosen per (model, input size, batch, train/eval) by measurement on CUDA.

At small resolutions the casts and layout changes can cost more than bf16 saves (issue 8 saw bf16 + NHWC at
0.70x of fp32 for ResNet-18 at 64 px), so `auto` times a few steps of each on a copy of the model and keeps
the faster; the choice and both timings go into the record. On CPU it is fp32 (CPU bf16 autocast is slower
than fp32 without AMX units, and there is no tensor-core layout to gain).
"""
from __future__ import annotations

import contextlib
import copy
import time

import torch

_CHOICES: dict = {}
MODES = ("auto", "bf16", "fp32")


def _time(model, x, y, train: bool, bf16: bool, nhwc: bool, steps: int = 3) -> float:
    model = model.to(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    x = x.contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    times = []
    for i in range(steps + 1):
        torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        if train:
            with ctx():
                loss = torch.nn.functional.cross_entropy(model(x), y) if y is not None else model(x).float().mean()
            loss.backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode(), ctx():
                model(x)
        torch.cuda.synchronize(x.device)
        if i:  # the first call pays cuDNN's algorithm search
            times.append(time.perf_counter() - t0)
    return min(times)


def choose(mode: str, model, x: torch.Tensor, y: torch.Tensor | None, train: bool, key=None) -> dict:
    """{'precision': 'bf16'|'fp32', 'channels_last': bool, 'how': ...}; `x` a real batch on the run's device."""
    if mode not in MODES:
        raise ValueError(f"precision must be one of {MODES}, got {mode!r}")
    if x.device.type != "cuda":
        return {"precision": "fp32", "channels_last": False, "how": "cpu: fp32"}
    if mode != "auto":
        return {"precision": mode, "channels_last": mode == "bf16", "how": "set in config"}
    key = key or (type(model).__name__, tuple(x.shape), train)
    if key not in _CHOICES:
        probe = copy.deepcopy(model).to(x.device)
        probe.train(train)
        bf16 = _time(probe, x, y, train, True, True)
        fp32 = _time(probe, x, y, train, False, False)
        del probe
        torch.cuda.empty_cache()
        fast = bf16 <= fp32
        _CHOICES[key] = {"precision": "bf16" if fast else "fp32", "channels_last": fast,
                         "how": f"measured: bf16+NHWC {1e3 * bf16:.1f} ms, fp32 {1e3 * fp32:.1f} ms per batch"}
    return _CHOICES[key]
