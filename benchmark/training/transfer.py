"""What is being transferred (Neyshabur, Sedghi & Zhang, NeurIPS 2020), as optional diagnostics of a trained cell:

- `cka`: linear CKA (Kornblith et al. 2019) between pre-trained and fine-tuned features, per block, on the test
  split. Block outputs are pooled (spatial / token mean) first: the full activations of early ResNet blocks are
  ~10⁵–10⁶ wide per image, too large to hold for a test split; pooled CKA is the usual compromise.
- `criticality`: per block, rewind it to its pre-trained weights (others fine-tuned), measure test accuracy, and
  find the smallest interpolation factor α on θ₀ + α(θ_f − θ₀) that keeps accuracy within `tol` points of the
  fine-tuned network (0 = the block could be left pre-trained; 1 = it needs all of its change).
- `barrier`: loss and accuracy at 11 points of the linear path between two fine-tunes of the same checkpoint with
  different seeds, and the barrier height above the straight line between the end points.

Pure functions of models and batches of (images, labels); nothing here knows about records or the grid.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import torch_save
from ..errors import CellError, ConfigError, unknown_name

DIAGNOSTICS = ("cka", "criticality", "barrier", "layer_nc1")  # layer_nc1: training/block_choice.py
MAX_IMAGES = 1024  # test images the diagnostics use (the split's first ones, in order): ~0.6 GB at 224 px


def check_names(names, where: str = "") -> list:
    if not isinstance(names, list):
        raise ConfigError(f"{where}: 'diagnostics' must be a list, e.g. [cka, criticality, barrier]")
    for n in names:
        if n not in DIAGNOSTICS:
            raise unknown_name("transfer diagnostic", n, DIAGNOSTICS, where)
    return names


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """‖Y_cᵀX_c‖²_F / (‖X_cᵀX_c‖_F ‖Y_cᵀY_c‖_F) with column-centred X [n, p], Y [n, q] (Kornblith et al., eq. 4's
    feature-space form; float64 on the data's device)."""
    x = x.to(torch.float64)
    y = y.to(device=x.device, dtype=torch.float64)
    x, y = x - x.mean(0, keepdim=True), y - y.mean(0, keepdim=True)
    num = (y.T @ x).square().sum()
    den = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return (num / den).item() if den > 0 else float("nan")


def blocks_for(backbone: nn.Module) -> list[nn.Module]:
    """The residual blocks of ResNets / ViTs (as Layer-FT counts them), else timm's `blocks` stages
    (EfficientNet, MobileNet), else the top-level children that hold parameters."""
    from .surgery import blocks_of
    try:
        return blocks_of(backbone)[0]
    except CellError:
        pass
    if isinstance(getattr(backbone, "blocks", None), nn.Sequential):
        return list(backbone.blocks)
    return [m for m in backbone.children() if any(True for _ in m.parameters())]


def _pool(h: torch.Tensor) -> torch.Tensor:
    if h.dim() == 4:
        return h.mean((2, 3))
    if h.dim() == 3:
        return h.mean(1)
    return h.flatten(1)


@torch.no_grad()
def block_features(backbone: nn.Module, batches, device) -> list[torch.Tensor]:
    """Pooled output of every block over all batches: list of [n, width] on the CPU."""
    blocks = blocks_for(backbone)
    outs = [[] for _ in blocks]
    hooks = [b.register_forward_hook(lambda _m, _i, o, k=k: outs[k].append(_pool(o).float().cpu()))
             for k, b in enumerate(blocks)]
    try:
        backbone.eval().to(device)
        for x, _ in batches:
            backbone(x.to(device))
    finally:
        for h in hooks:
            h.remove()
    return [torch.cat(o) for o in outs]


def cka_per_block(pretrained: nn.Module, finetuned: nn.Module, batches, device) -> list[float]:
    before, after = block_features(pretrained, batches, device), block_features(finetuned, batches, device)
    return [linear_cka(a, b) for a, b in zip(before, after)]


@torch.no_grad()
def evaluate(model: nn.Module, batches, device) -> tuple[float, float]:
    """(mean cross-entropy, top-1 %) of a classifier over the batches, in float32."""
    model.eval().to(device)
    loss, correct, n = 0.0, 0, 0
    for x, y in batches:
        logits = model(x.to(device)).float()
        y = y.to(logits.device)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        n += len(y)
    return loss / max(n, 1), 100.0 * correct / max(n, 1)


def interpolate(sd0: dict, sd1: dict, alpha: float) -> dict:
    """(1 − α)·sd0 + α·sd1 for floating tensors (BN running statistics included); integer buffers, and entries
    sd0 lacks (a layer a protocol added), from sd1."""
    return {k: torch.lerp(sd0[k].to(v.dtype), v, alpha) if torch.is_floating_point(v) and k in sd0 else v
            for k, v in sd1.items()}


def criticality(finetuned: nn.Module, pretrained_backbone: nn.Module, batches, device, tol: float = 1.0,
                points: int = 11) -> list[dict]:
    """Per block of `finetuned.backbone`: test top-1 with that block rewound to `pretrained_backbone`'s weights,
    the drop from the fine-tuned top-1, and the smallest α on an `points` grid within `tol` points of it."""
    model = copy.deepcopy(finetuned)
    _, base = evaluate(model, batches, device)
    ft_blocks, pre_blocks = blocks_for(model.backbone), blocks_for(pretrained_backbone)
    alphas = [k / (points - 1) for k in range(points)]
    out = []
    for k, (blk, pre) in enumerate(zip(ft_blocks, pre_blocks)):
        sd_f = {n: t.detach().clone() for n, t in blk.state_dict().items()}
        sd_0 = {n: t.detach().to(sd_f[n].device) for n, t in pre.state_dict().items()}
        rewound, alpha_min = None, 1.0
        for a in alphas:
            blk.load_state_dict(interpolate(sd_0, sd_f, a))
            _, acc = evaluate(model, batches, device)
            rewound = acc if rewound is None else rewound
            if acc >= base - tol:
                alpha_min = a
                break
        blk.load_state_dict(sd_f)
        out.append({"block": k + 1, "rewind_top1": rewound, "drop": base - rewound, "alpha_min": alpha_min})
    return out


def barrier(model_a: nn.Module, state_b: dict, batches, device, points: int = 11) -> dict:
    """Loss and top-1 along θ(t) = (1 − t)θ_a + tθ_b, and each barrier: the largest excess over the straight line
    joining the end points (loss above it; accuracy below it)."""
    model = copy.deepcopy(model_a)
    sd_a = {k: v.detach().clone() for k, v in model_a.state_dict().items()}
    ts = [k / (points - 1) for k in range(points)]
    losses, accs = [], []
    for t in ts:
        model.load_state_dict(interpolate(sd_a, {k: v.to(sd_a[k].device) for k, v in state_b.items()}, t))
        loss, acc = evaluate(model, batches, device)
        losses.append(loss)
        accs.append(acc)
    line = lambda v, t: (1 - t) * v[0] + t * v[-1]  # noqa: E731
    return {"t": ts, "loss": losses, "top1": accs,
            "loss_barrier": max(l - line(losses, t) for l, t in zip(losses, ts)),
            "top1_barrier": max(line(accs, t) - a for a, t in zip(accs, ts))}


def materialise(batches, max_images: int = MAX_IMAGES) -> list:
    """The first `max_images` test images as tensors, transformed once: criticality and the barrier evaluate the
    network ~30 times, and re-running the data pipeline each time would dominate their cost."""
    kept, n = [], 0
    for x, y in batches:
        take = min(len(y), max_images - n)
        kept.append((x[:take], y[:take]))
        n += take
        if n >= max_images:
            break
    return kept


def transfer_diagnostics(model, pristine, batches, device, names, weights: Path) -> dict:
    """The cell's hook. `weights`: where this fine-tune's weights are kept (barrier only) so that the cell of another
    seed can interpolate to it; the barrier is computed against the lowest other seed already there."""
    batches = materialise(batches)
    out = {"n_images": sum(len(y) for _, y in batches)}
    if "cka" in names:
        out["cka"] = cka_per_block(pristine, model.backbone, batches, device)
    if "criticality" in names:
        out["criticality"] = criticality(model, pristine, batches, device)
    if "barrier" in names:
        weights = Path(weights)
        torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, weights)
        stem = weights.name.split("__seed")[0]
        others = sorted((p for p in weights.parent.glob(f"{stem}__seed*.final.pt") if p != weights),
                        key=lambda p: int(p.name.split("__seed")[1].split(".")[0]))
        if others:
            other = torch.load(others[0], map_location="cpu", weights_only=True)
            out["barrier"] = {"other_seed": int(others[0].name.split("__seed")[1].split(".")[0]),
                              **barrier(model, other, batches, device)}
        else:
            out["barrier"] = {"note": "first seed: weights kept; the next seed's cell computes the barrier"}
    return out
