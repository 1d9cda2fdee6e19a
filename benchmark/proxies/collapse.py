"""Neural-collapse measures of frozen features: NC1, CDNV and within-class numerical rank (lower = more collapsed)."""
from __future__ import annotations

import torch

from .base import check_inputs, register_proxy


def _class_stats(x, y):
    x = x.double()
    classes = torch.unique(y)
    means = torch.stack([x[y == c].mean(0) for c in classes])
    pos = torch.searchsorted(classes, y)
    return x, classes, means, pos


def nc1_value(x, y) -> tuple[float, int]:
    """tr(Σ_W Σ_B⁺)/K without forming a d x d pseudo-inverse.

    Σ_B = (1/K) MᵀM with M the K x d centred class means, so its range is spanned by the right singular vectors
    of M: with M/√K = U S Vᵀ, Σ_B⁺ = V S⁻² Vᵀ and tr(Σ_W Σ_B⁺) = Σ_j s_j⁻² (1/N) Σ_i ((h_i − μ_c)·v_j)².
    Cost O(N d K) instead of O(d³). The cut-off for null directions is scipy.linalg.pinv's (rtol = d·eps).
    """
    x, classes, means, pos = _class_stats(x, y)
    k, (n, d) = len(classes), x.shape
    centred_means = means - means.mean(0)
    _, s, vh = torch.linalg.svd(centred_means / k ** 0.5, full_matrices=False)
    eig = s ** 2
    keep = eig > eig.max() * max(d, d) * torch.finfo(torch.float64).eps
    z = (x - means[pos]) @ vh[keep].T
    trace = ((z ** 2).sum(0) / n / eig[keep]).sum()
    return (trace / k).item(), int(keep.sum())


@register_proxy("nc1", primary="nc1", higher_is_better=False, needs_test=False)
def nc1(train_x, train_y, test_x=None, test_y=None, **_):
    """NC1 = tr(Σ_W Σ_B⁺)/K of the training features (within- vs between-class variability)."""
    check_inputs(train_x, train_y, "nc1", min_per_class=2)
    value, rank = nc1_value(train_x, train_y)
    return {"nc1": value, "between_rank": rank}


@register_proxy("cdnv", primary="cdnv", higher_is_better=False, needs_test=False)
def cdnv(train_x, train_y, test_x=None, test_y=None, **_):
    """Class-distance normalised variance (Var_c + Var_c')/(2‖μ_c − μ_c'‖²), averaged over class pairs."""
    check_inputs(train_x, train_y, "cdnv", min_per_class=2)
    x, classes, means, pos = _class_stats(train_x, train_y)
    var = torch.zeros(len(classes), dtype=x.dtype, device=x.device)
    var.index_add_(0, pos, ((x - means[pos]) ** 2).sum(1))
    var /= torch.bincount(pos, minlength=len(classes)).to(x.dtype)
    dist2 = torch.cdist(means, means) ** 2
    iu = torch.triu_indices(len(classes), len(classes), 1)
    ratios = (var[iu[0]] + var[iu[1]]) / (2 * dist2[iu[0], iu[1]])
    return {"cdnv": ratios.mean().item()}


@register_proxy("numerical_rank", primary="numerical_rank", higher_is_better=False, needs_test=False)
def numerical_rank(train_x, train_y, test_x=None, test_y=None, **_):
    """Mean over classes of the stable rank ‖H_k‖_F²/‖H_k‖_2² of the class's centred features."""
    check_inputs(train_x, train_y, "numerical_rank", min_per_class=2)
    x, classes, means, pos = _class_stats(train_x, train_y)
    ranks = []
    for i in range(len(classes)):
        h = x[pos == i] - means[i]
        sv = torch.linalg.svdvals(h)
        ranks.append(((sv ** 2).sum() / sv[0] ** 2).item())
    return {"numerical_rank": float(sum(ranks) / len(ranks))}
