"""Fit a ViT checkpoint's absolute position embeddings to the architecture it is loaded into.

SSL runs train at 224 px (a 16×16 or 14×14 grid for patch 14) while timm builds e.g. DINOv2 at 518 px (37×37),
and bench builds fixed-size ViTs at the dataset's resolution: the embeddings are resampled once, before the
strict load, with timm's own `resample_abs_pos_embed` (bicubic, antialiased, prefix tokens kept as they are).
"""
from __future__ import annotations

import math

from timm.layers import resample_abs_pos_embed
from torch import nn


def _embedded_prefix(module: nn.Module) -> int:
    """Tokens (class, registers) whose embedding sits in front of the patch grid in `pos_embed`."""
    return 0 if getattr(module, "no_embed_class", False) else int(getattr(module, "num_prefix_tokens", 1))


def fit_pos_embed(sd: dict, module: nn.Module) -> list[str]:
    """Rewrite `sd` in place so its position embeddings fit `module`; returns notes for the record."""
    own = module.state_dict()
    if "pos_embed" not in sd or "pos_embed" not in own:
        return []
    notes = []
    if "register_tokens" in sd and "reg_token" in own and "reg_token" not in sd:
        # DINOv2 with registers embeds the class token's position, timm's port does not (no_embed_class):
        # fold it into the class token, as timm's own DINOv2 converter does.
        sd["reg_token"] = sd.pop("register_tokens")
        sd["cls_token"] = sd["cls_token"] + sd["pos_embed"][:, :1]
        sd["pos_embed"] = sd["pos_embed"][:, 1:]
        notes.append("DINOv2 register layout: class-token position folded into cls_token, register_tokens→reg_token")
    src, dst = sd["pos_embed"], own["pos_embed"]
    if src.shape == dst.shape or src.dim() != 3 or src.shape[-1] != dst.shape[-1]:
        return notes  # equal, or not resamplable: the strict load names the mismatch
    n_prefix = _embedded_prefix(module)
    side = math.isqrt(src.shape[1] - n_prefix)
    if side * side != src.shape[1] - n_prefix:
        return notes
    grid = list(module.patch_embed.grid_size)
    sd["pos_embed"] = resample_abs_pos_embed(src, new_size=grid, old_size=[side, side], num_prefix_tokens=n_prefix)
    notes.append(f"position embeddings resampled from a {side}×{side} to a {grid[0]}×{grid[1]} grid (bicubic)")
    return notes
