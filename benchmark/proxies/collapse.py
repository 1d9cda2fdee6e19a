"""Neural-collapse measures of frozen features: NC1, CDNV and within-class numerical rank (lower = more collapsed)."""
from __future__ import annotations

import torch

from ..errors import CellError
from .base import DIED, check_inputs, degenerate, register_proxy, undefined


def _class_stats(x, y):
    x = x.double()
    classes = torch.unique(y)
    means = torch.stack([x[y == c].mean(0) for c in classes])
    pos = torch.searchsorted(classes, y)
    return x, classes, means, pos


def nc1_value(x, y, weighted_mean: bool = False) -> tuple[float, int]:
    """tr(Σ_W Σ_B⁺)/K without forming a d x d pseudo-inverse.

    Σ_B is centred on the mean of the class means (each class counts once, our documented default) or, with
    `weighted_mean`, on the sample-weighted global mean (Papyan et al. 2020's μ_G, the mean of all features);
    the two agree on balanced classes.

    Σ_B = (1/K) MᵀM with M the K x d centred class means, so its range is spanned by the right singular vectors
    of M: with M/√K = U S Vᵀ, Σ_B⁺ = V S⁻² Vᵀ and tr(Σ_W Σ_B⁺) = Σ_j s_j⁻² (1/N) Σ_i ((h_i − μ_c)·v_j)².
    Cost O(N d K) instead of O(d³). The cut-off for null directions is scipy.linalg.pinv's (rtol = d·eps).
    When every class mean coincides (Σ_B = 0: dead or constant features) the ratio is 0/0: NaN, not 0.
    """
    x, classes, means, pos = _class_stats(x, y)
    k, (n, d) = len(classes), x.shape
    centred_means = means - (x.mean(0) if weighted_mean else means.mean(0))
    _, s, vh = torch.linalg.svd(centred_means / k ** 0.5, full_matrices=False)
    eig = s ** 2
    keep = eig > eig.max() * max(d, d) * torch.finfo(torch.float64).eps
    if not bool(keep.any()):
        return float("nan"), 0
    z = (x - means[pos]) @ vh[keep].T
    trace = ((z ** 2).sum(0) / n / eig[keep]).sum()
    return (trace / k).item(), int(keep.sum())


@register_proxy("nc1", primary="nc1", higher_is_better=False, needs_test=False)
def nc1(train_x, train_y, test_x=None, test_y=None, *, weighted_mean=False):
    """NC1 = tr(Σ_W Σ_B⁺)/K of the training features (within- vs between-class variability).

    weighted_mean: centre Σ_B on the sample-weighted global mean (Papyan et al.) instead of the mean of class means.
    """
    check_inputs(train_x, train_y, "nc1", min_per_class=2)
    value, rank = nc1_value(train_x, train_y, bool(weighted_mean))
    if rank == 0:
        raise undefined("nc1", "every class has the same mean, so Σ_B = 0 and tr(Σ_W Σ_B⁺)/K is 0/0", train_x)
    return {"nc1": value, "between_rank": rank}


@register_proxy("cdnv", primary="cdnv", higher_is_better=False, needs_test=False)
def cdnv(train_x, train_y, test_x=None, test_y=None, **_):
    """Class-distance normalised variance (Var_c + Var_c')/(2‖μ_c − μ_c'‖²), averaged over class pairs.

    Two classes with identical means (dead or constant features) make a pair's ratio 0/0 or ∞: an error naming
    the classes, never a NaN score."""
    check_inputs(train_x, train_y, "cdnv", min_per_class=2)
    x, classes, means, pos = _class_stats(train_x, train_y)
    var = torch.zeros(len(classes), dtype=x.dtype, device=x.device)
    var.index_add_(0, pos, ((x - means[pos]) ** 2).sum(1))
    var /= torch.bincount(pos, minlength=len(classes)).to(x.dtype)
    # exact differences (no ‖a‖² + ‖b‖² − 2ab rounding): identical means give exactly 0; K x K is small
    dist2 = torch.cdist(means, means, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    iu = torch.triu_indices(len(classes), len(classes), 1)
    same = (dist2[iu[0], iu[1]] == 0).nonzero()
    if len(same):
        a, b = (classes[iu[j, same[0, 0]]].item() for j in (0, 1))
        dead = degenerate(x[(pos == iu[0, same[0, 0]]) | (pos == iu[1, same[0, 0]])])
        raise CellError(f"cdnv: classes {a} and {b} have identical means ({dead}): {DIED}" if dead else
                        f"cdnv: classes {a} and {b} have identical means, so their ratio is undefined "
                        f"({len(same)} such pair(s))")
    ratios = (var[iu[0]] + var[iu[1]]) / (2 * dist2[iu[0], iu[1]])
    return {"cdnv": ratios.mean().item()}


def stable_rank(h) -> float:
    """‖H‖_F²/‖H‖_2², exactly: both are spectral sums of the Gram matrix on H's smaller side (its trace and its
    largest eigenvalue), so one eigvalsh of a min(n, d)² matrix replaces a full SVD of H."""
    gram = h @ h.T if h.shape[0] <= h.shape[1] else h.T @ h
    eig = torch.linalg.eigvalsh(gram)
    return (eig.sum() / eig[-1]).item() if eig[-1] > 0 else float("nan")


@register_proxy("numerical_rank", primary="numerical_rank", higher_is_better=False, needs_test=False)
def numerical_rank(train_x, train_y, test_x=None, test_y=None, *, centered=False):
    """Li et al.'s numerical rank: mean over classes of ‖H_k‖_F²/‖H_k‖_2², H_k the class's features.

    As defined in "Principled and Efficient Transfer Learning of Deep Models via Neural Collapse" (Appendix A):
    H_k uncentred, so the value tends to 1 as a class collapses onto its mean. centered: use H_k minus the class
    mean instead (the stable rank of the within-class spread alone, which does not tend to 1 under collapse).
    """
    check_inputs(train_x, train_y, "numerical_rank", min_per_class=2 if centered else 1)
    x, classes, means, pos = _class_stats(train_x, train_y)
    ranks = [stable_rank(x[pos == i] - means[i] if centered else x[pos == i]) for i in range(len(classes))]
    # A class whose features are all zero (dead units: seen with EfficientNet-Lite2 at 32 px) has no defined
    # rank (0/0); it is left out of the mean and counted, rather than failing the cell.
    undefined = sum(r != r for r in ranks)
    ranks = [r for r in ranks if r == r]
    if not ranks:
        raise CellError(f"numerical_rank: every class's features are all zero, so the rank is undefined (0/0): "
                        f"{DIED}")
    return {"numerical_rank": float(sum(ranks) / len(ranks)), "zero_feature_classes": undefined}
