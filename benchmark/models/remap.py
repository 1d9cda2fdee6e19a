"""State-dict surgery for checkpoints from SSL repositories (prefix stripping, regex renames, drops)."""
from __future__ import annotations

import re

import torch

from ..errors import CellError

# Where SSL checkpoints nest their weights, in order of preference: DINO saves both `student` and `teacher` and
# evaluates the teacher, so the teacher comes first.
_NESTED_KEYS = ("teacher", "state_dict", "model", "net", "module")


def _walk(obj, key: str, model: str):
    """Follow a dotted path; a part may itself contain dots (a key is first tried whole, then split)."""
    if isinstance(obj, dict) and key in obj:
        return obj[key]
    head, rest = key, ""
    while "." in head:
        head, tail = head.rsplit(".", 1)
        rest = f"{tail}.{rest}" if rest else tail
        if isinstance(obj, dict) and head in obj:
            return _walk(obj[head], rest, model)
    have = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
    raise CellError(f"model '{model}': state_dict_key '{key}' not in checkpoint (keys there: {have})")


def extract_state_dict(obj, key: str | None, model: str) -> tuple[dict, str | None]:
    """(state dict, the key path it was found under)."""
    if key:
        sd = _walk(obj, key, model)
        if not isinstance(sd, dict):
            raise CellError(f"model '{model}': state_dict_key '{key}' holds a {type(sd).__name__}, not a state dict")
        return sd, key
    # Most SSL checkpoints nest the weights one level down; take the first conventional key if nothing is a tensor.
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for k in _NESTED_KEYS:
            if isinstance(obj.get(k), dict):
                return obj[k], k
    if not isinstance(obj, dict):
        raise CellError(f"model '{model}': checkpoint is a {type(obj).__name__}, not a state dict; set state_dict_key")
    return obj, None


def branch_note(used_key: str | None, keep_prefix) -> str | None:
    """Say so when a DINO-style student is evaluated: the authors report the teacher."""
    parts = (used_key or "").split(".") + [p for pre in keep_prefix for p in pre.split(".")]
    if "student" in parts:
        return "loaded the student branch; the authors evaluate the teacher (state_dict_key: teacher)"
    return None


def remap_keys(sd: dict, strip_prefix=(), rename=(), drop=(), keep_prefix=()) -> dict:
    """keep_prefix (select, then strip), strip_prefix, rename, drop: in that order. Non-tensors are dropped."""
    out = {}
    drop_res = [re.compile(d) for d in drop]
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            continue
        if keep_prefix:
            prefix = next((p for p in keep_prefix if key.startswith(p)), None)
            if prefix is None:
                continue
            key = key[len(prefix):]
        for prefix in strip_prefix:
            if key.startswith(prefix):
                key = key[len(prefix):]
        for pattern, repl in rename:
            key = re.sub(pattern, repl, key)
        if any(r.search(key) for r in drop_res):
            continue
        out[key] = value
    return out


def mismatch(own: dict, sd: dict) -> str | None:
    """One line naming missing, unexpected and misshapen keys, or None when `sd` fits `own` exactly."""
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad_shape = [f"{k} {tuple(sd[k].shape)}≠{tuple(own[k].shape)}" for k in own
                 if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or bad_shape):
        return None

    def show(xs):
        return f"{len(xs)} [{', '.join(xs[:6])}{', …' if len(xs) > 6 else ''}]"
    return f"missing {show(missing)}, unexpected {show(unexpected)}, shape {show(bad_shape)}"


def load_strict(module: torch.nn.Module, sd: dict, model: str) -> None:
    problem = mismatch(module.state_dict(), sd)
    if problem:
        raise CellError(f"model '{model}': state dict does not match the architecture: {problem}; "
                        f"fix keep_prefix/strip_prefix/rename/drop")
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
