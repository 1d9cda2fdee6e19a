"""LogME (You et al. 2021): the maximum marginal evidence of a Bayesian linear model from features to each
class's 0/1 target, averaged over classes. Higher = more transferable."""
from __future__ import annotations

import math

import torch

from .base import check_inputs, register_proxy, undefined
from .classstats import class_index, float64, gram, one_hot
from .moments import centred


def logme_value(x: torch.Tensor, y: torch.Tensor, max_iter: int = 11, tol: float = 1e-3) -> float:
    """The fixed-point algorithm of the authors' LogME.py (`_fit_fixed_point`, their default), all classes at once.

    One eigendecomposition of the smaller Gram matrix gives the singular values s and uᵀt for every class
    (the reference takes the SVD of f when N <= D and of fᵀf otherwise: same spectrum); components with
    s <= 1e-10 are dropped as there. Each class iterates until |α/β − τ|/τ <= tol and then stays frozen,
    which is the reference's per-class loop with its `break`."""
    f = float64(x)
    n, d = f.shape
    pos, k = class_index(y)
    t = one_hot(pos, k, f.dtype)  # [N, K]: class k's 0/1 target in column k
    if n > d:
        mu, g = centred(x)  # fᵀf = G + N μμᵀ from the Gram matrix the other estimators share
        lam, v = torch.linalg.eigh(g + n * torch.outer(mu, mu))
        s = lam.abs().sqrt()
        keep = s > 1e-10
        ftt = torch.zeros(k, d, dtype=f.dtype, device=f.device).index_add_(0, pos, f).T  # fᵀt: class sums
        xs = (v[:, keep].T @ ftt) / s[keep, None]  # uᵀt with u = f v / s
    else:
        lam, u = torch.linalg.eigh(gram(f.T))
        s = lam.abs().sqrt()
        keep = s > 1e-10
        xs = u[:, keep].T @ t
    if not bool(keep.any()):  # the reference's evidence is then log(0) = −∞ (α = 0): an error, not a score
        raise undefined("logme", "no feature direction has a singular value above 1e-10, so the evidence is −∞", x)
    sigma = (s[keep] ** 2)[:, None]  # [r, 1]
    x2 = xs ** 2  # [r, K]
    res_x2 = (t ** 2).sum(0) - x2.sum(0)  # residual of the target outside the feature span
    alpha = torch.ones(k, dtype=f.dtype, device=f.device)
    beta = torch.ones_like(alpha)
    active = torch.ones(k, dtype=torch.bool, device=f.device)
    m2 = res2 = torch.zeros_like(alpha)
    for _ in range(max_iter):
        tau = alpha / beta
        gamma = (sigma / (sigma + tau)).sum(0)
        new_m2 = (sigma * x2 / (tau + sigma) ** 2).sum(0)
        new_res2 = (x2 / (1 + sigma / tau) ** 2).sum(0) + res_x2
        new_alpha = gamma / (new_m2 + 1e-5)
        new_beta = (n - gamma) / (new_res2 + 1e-5)
        m2, res2 = torch.where(active, new_m2, m2), torch.where(active, new_res2, res2)
        alpha, beta = torch.where(active, new_alpha, alpha), torch.where(active, new_beta, beta)
        active = active & ((new_alpha / new_beta - tau).abs() / tau > tol)
        if not active.any():
            break
    evidence = (d / 2 * alpha.log() + n / 2 * beta.log() - 0.5 * (alpha + beta * sigma).log().sum(0)
                - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * math.log(2 * math.pi)) / n
    return evidence.mean().item()


@register_proxy("logme", primary="logme", higher_is_better=True, needs_test=False)
def logme(train_x, train_y, test_x=None, test_y=None, **_):
    """LogME (You et al. 2021): mean log-evidence of Bayesian linear regression onto 0/1 class targets."""
    check_inputs(train_x, train_y, "logme")
    return {"logme": logme_value(train_x, train_y)}
