"""H-score (Bao et al. 2019) and its shrinkage form (Ibrahim et al. 2022): how much of the feature covariance
the class-conditional means explain. Higher = more transferable."""
from __future__ import annotations

import torch

from .base import check_inputs, register_proxy
from .classstats import class_index, class_means, float64


def _between(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """M [K, D] with MᵀM = cov(g), g_i = mean of f over the class of sample i (1/(N−1), as np.cov):
    the D x D covariance of g is never formed."""
    pos, k = class_index(y)
    means, counts = class_means(f, pos, k)
    return (means - f.mean(0)) * (counts / (len(f) - 1)).sqrt()[:, None]


def _trace_pinv(cov: torch.Tensor, m: torch.Tensor, rcond: float) -> float:
    """tr(pinv(cov) MᵀM) = Σ_j ‖M v_j‖²/λ_j over eigenpairs above rcond·λ_max (np.linalg.pinv's cut-off on a
    symmetric matrix, whose singular values are |λ|)."""
    lam, v = torch.linalg.eigh(cov)
    keep = lam.abs() > rcond * lam.abs().max()
    return (((m @ v[:, keep]) ** 2).sum(0) / lam[keep]).sum().item()


def hscore_value(x, y, rcond: float = 1e-15) -> float:
    """tr(pinv(cov f) cov(E[f|y])) on raw features, pinv with rcond 1e-15 as the authors' README code."""
    f = float64(x)
    fc = f - f.mean(0)
    return _trace_pinv(fc.T @ fc / (len(f) - 1), _between(f, y), rcond)


def ledoit_wolf(fc: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Ledoit–Wolf shrunk covariance of centred fc and its shrinkage, as sklearn's `LedoitWolf` computes them.

    Written out because sklearn's blockwise loop forms X²ᵀX² (D x D) only to sum it: that sum is Σ_i ‖x_i‖⁴."""
    n, d = fc.shape
    emp = fc.T @ fc / n
    mu = torch.trace(emp) / d
    delta_ = (emp ** 2).sum()
    beta_ = ((fc ** 2).sum(1) ** 2).sum()
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2 * mu * torch.trace(emp) + d * mu ** 2) / d
    beta = torch.minimum(beta, delta)
    shrink = 0.0 if beta.item() == 0 else (beta / delta).item()
    cov = (1 - shrink) * emp
    cov.diagonal().add_(shrink * mu)
    return cov, shrink


def reg_hscore_value(x, y) -> float:
    """tr(pinv(Σ_LW) (1−α) cov(E[f|y])) on centred features (TLlib's `regularized_h_score`)."""
    f = float64(x)
    fc = f - f.mean(0)
    cov, shrink = ledoit_wolf(fc)
    return (1 - shrink) * _trace_pinv(cov, _between(fc, y), 1e-15)


@register_proxy("hscore", primary="hscore", higher_is_better=True, needs_test=False)
def hscore(train_x, train_y, test_x=None, test_y=None, **_):
    """H-score (Bao et al. 2019): tr(pinv(cov f) · cov(E[f|y])); affine-invariant, range 0..min(K−1, D)."""
    check_inputs(train_x, train_y, "hscore")
    return {"hscore": hscore_value(train_x, train_y)}


@register_proxy("reg_hscore", primary="reg_hscore", higher_is_better=True, needs_test=False)
def reg_hscore(train_x, train_y, test_x=None, test_y=None, **_):
    """Shrinkage H-score (Ibrahim et al. 2022): H-score with the Ledoit–Wolf feature covariance."""
    check_inputs(train_x, train_y, "reg_hscore")
    return {"reg_hscore": reg_hscore_value(train_x, train_y)}
