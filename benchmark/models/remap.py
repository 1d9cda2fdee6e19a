"""State-dict surgery for checkpoints from SSL repositories (prefix stripping, regex renames, drops)."""
from __future__ import annotations

import re

import torch

from ..errors import CellError

_NESTED_KEYS = ("state_dict", "model", "teacher", "net", "module")


def extract_state_dict(obj, key: str | None, model: str) -> dict:
    if key:
        for part in key.split("."):
            if not isinstance(obj, dict) or part not in obj:
                have = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
                raise CellError(f"model '{model}': state_dict_key '{key}' not in checkpoint (top-level keys: {have})")
            obj = obj[part]
        return obj
    # Most SSL checkpoints nest the weights one level down; take the first conventional key if nothing is a tensor.
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for k in _NESTED_KEYS:
            if isinstance(obj.get(k), dict):
                return obj[k]
    if not isinstance(obj, dict):
        raise CellError(f"model '{model}': checkpoint is a {type(obj).__name__}, not a state dict; set state_dict_key")
    return obj


def remap_keys(sd: dict, strip_prefix=(), rename=(), drop=()) -> dict:
    out = {}
    drop_res = [re.compile(d) for d in drop]
    for key, value in sd.items():
        for prefix in strip_prefix:
            if key.startswith(prefix):
                key = key[len(prefix):]
        for pattern, repl in rename:
            key = re.sub(pattern, repl, key)
        if any(r.search(key) for r in drop_res):
            continue
        out[key] = value
    return out


def load_strict(module: torch.nn.Module, sd: dict, model: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad_shape = [f"{k} {tuple(sd[k].shape)}≠{tuple(own[k].shape)}" for k in own
                 if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        def show(xs):
            return f"{len(xs)} [{', '.join(xs[:6])}{', …' if len(xs) > 6 else ''}]"
        raise CellError(f"model '{model}': state dict does not match the architecture: missing {show(missing)}, "
                        f"unexpected {show(unexpected)}, shape {show(bad_shape)}; fix strip_prefix/rename/drop")
    module.load_state_dict(sd, strict=True)


def remap_by_position(src: dict, dst: dict, model: str) -> dict:
    """Rename `src` to `dst`'s keys by order; every shape must agree (used for packaged weights)."""
    src_items, dst_keys = list(src.items()), list(dst.keys())
    if len(src_items) != len(dst_keys):
        raise CellError(f"model '{model}': packaged weights have {len(src_items)} tensors, the timm architecture "
                        f"{len(dst_keys)}")
    out = {}
    for (sk, sv), dk in zip(src_items, dst_keys):
        if tuple(sv.shape) != tuple(dst[dk].shape):
            raise CellError(f"model '{model}': packaged tensor {sk} {tuple(sv.shape)} does not fit {dk} "
                            f"{tuple(dst[dk].shape)}")
        out[dk] = sv
    return out
