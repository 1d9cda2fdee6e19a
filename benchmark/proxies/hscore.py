"""H-score (Bao et al. 2019) and its shrinkage form (Ibrahim et al. 2022): how much of the feature covariance
the class-conditional means explain. Higher = more transferable."""
from __future__ import annotations

import torch

from .base import check_inputs, register_proxy
from .classstats import class_index, class_means, float64
from .moments import centred, centred_eigh


def _between(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """M [K, D] with MᵀM = cov(g), g_i = mean of f over the class of sample i (1/(N−1), as np.cov):
    the D x D covariance of g is never formed."""
    pos, k = class_index(y)
    means, counts = class_means(f, pos, k)
    return (means - f.mean(0)) * (counts / (len(f) - 1)).sqrt()[:, None]


def _trace_pinv(lam: torch.Tensor, v: torch.Tensor, m: torch.Tensor, rcond: float) -> float:
    """tr(pinv(C) MᵀM) for C = V diag(λ) Vᵀ: Σ_j ‖M v_j‖²/λ_j over eigenpairs above rcond·λ_max
    (np.linalg.pinv's cut-off on a symmetric matrix, whose singular values are |λ|)."""
    keep = lam.abs() > rcond * lam.abs().max()
    return (((m @ v[:, keep]) ** 2).sum(0) / lam[keep]).sum().item()


def hscore_value(x, y, rcond: float = 1e-15) -> float:
    """tr(pinv(cov f) cov(E[f|y])) on raw features, pinv with rcond 1e-15 as the authors' README code.
    cov f = G/(N−1) shares its eigenvectors with the centred Gram G of `moments` (computed once)."""
    lam, v = centred_eigh(x)
    return _trace_pinv(lam / (len(x) - 1), v, _between(float64(x), y), rcond)


def ledoit_wolf(x: torch.Tensor) -> tuple[float, torch.Tensor]:
    """sklearn `LedoitWolf`'s shrinkage α and μ = tr(S)/D for the empirical covariance S = G/N of x's rows;
    the shrunk covariance is (1−α) S + α μ I.

    Written out because sklearn's blockwise loop forms X²ᵀX² (D x D) only to sum it: that sum is Σ_i ‖x_i‖⁴;
    and because S comes from the Gram matrix the other estimators share."""
    mean, g = centred(x)
    n, d = x.shape
    emp_trace = torch.trace(g) / n
    mu = emp_trace / d
    delta_ = (g ** 2).sum() / n ** 2  # ‖S‖_F²
    beta_ = (((float64(x) - mean) ** 2).sum(1) ** 2).sum()
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2 * mu * emp_trace + d * mu ** 2) / d
    beta = torch.minimum(beta, delta)
    shrink = 0.0 if beta.item() == 0 else (beta / delta).item()
    return shrink, mu


def reg_hscore_value(x, y) -> float:
    """tr(pinv(Σ_LW) (1−α) cov(E[f|y])) on centred features (TLlib's `regularized_h_score`). Σ_LW =
    (1−α) G/N + α μ I has G's eigenvectors, with eigenvalues (1−α) λ/N + α μ."""
    shrink, mu = ledoit_wolf(x)
    lam, v = centred_eigh(x)
    return (1 - shrink) * _trace_pinv((1 - shrink) * lam / len(x) + shrink * mu, v, _between(float64(x), y), 1e-15)


def _rank_of_between(num_classes: int, feature_dim: int) -> float:
    """The H-scores' maximum: tr(pinv(C) cov g) <= rank(cov g) <= min(K-1, D), reached when the classes are
    separated exactly in the span of the features (e.g. N < D: hscore = K-1 for every model)."""
    return float(min(num_classes - 1, feature_dim))


@register_proxy("hscore", primary="hscore", higher_is_better=True, needs_test=False, best=_rank_of_between)
def hscore(train_x, train_y, test_x=None, test_y=None, **_):
    """H-score (Bao et al. 2019): tr(pinv(cov f) · cov(E[f|y])); affine-invariant, range 0..min(K−1, D).

    Dead or constant features give cov f = 0, whose pseudo-inverse is 0: H-score 0, the bottom of its range."""
    check_inputs(train_x, train_y, "hscore")
    return {"hscore": hscore_value(train_x, train_y)}


@register_proxy("reg_hscore", primary="reg_hscore", higher_is_better=True, needs_test=False, best=_rank_of_between)
def reg_hscore(train_x, train_y, test_x=None, test_y=None, **_):
    """Shrinkage H-score (Ibrahim et al. 2022): H-score with the Ledoit–Wolf feature covariance.

    Dead or constant features: no between-class covariance, so 0 (as H-score), the bottom of its range."""
    check_inputs(train_x, train_y, "reg_hscore")
    return {"reg_hscore": reg_hscore_value(train_x, train_y)}
