"""SFDA (Shao et al. 2022): a shrinkage Fisher discriminant's mean true-class probability after the
self-challenging ConfMix step. Higher = more transferable."""
from __future__ import annotations

import math

import torch

from .base import check_inputs, register_proxy, undefined
from .classstats import class_index, class_means, float64, gram
from .moments import centred


def _top_eigenvalue(a: torch.Tensor, iters: int = 3) -> torch.Tensor:
    """The reference's `iterative_A`: 3 power iterations from the row sums, Rayleigh-like quotient xᵀAy."""
    x = a.sum(1)
    for _ in range(iters):
        yv = a @ x
        yv = yv / yv.norm()
        x = a @ yv
        x = x / x.norm()
    return x @ a @ yv


def lda_probs(x, pos, k, shrink=None, sw=None):
    """p(y|x) of the reference's shrinkage LDA, and the shrinkage used.

    The reference solves scipy.linalg.eigh(S_b, S_w) and forms coef = μ V Vᵀ with all D eigenvectors; as
    Vᵀ S_w V = I, V Vᵀ = S_w⁻¹, so coef = μ S_w⁻¹ (one linear solve, and S_b, S_t are never needed)."""
    n, d = x.shape
    means, counts = class_means(x, pos, k)
    if sw is None:
        resid = x - means[pos]
        sw = gram(resid) / n  # Σ_k π_k cov_k with 1/n_k covariances
    if shrink is None:
        shrink = max(math.exp(-5 * _top_eigenvalue(sw).item()), 1e-10)
    mu = torch.trace(sw) / d
    sw = (1 - shrink) * sw
    sw.diagonal().add_(shrink * mu)
    coef = torch.linalg.solve(sw, means.T).T  # [K, D]
    intercept = -0.5 * (means * coef).sum(1) + (counts / n).log()
    return torch.softmax(x @ coef.T + intercept, dim=1), shrink


def sfda_value(x, y) -> float:
    """LDA #1 -> softened probabilities -> ConfMix (on a copy: the reference mutates its input) -> LDA #2."""
    f = float64(x)
    pos, k = class_index(y)
    # First LDA's within-class scatter from the shared centred Gram G: N·S_w = G − Σ_k n_k (m_k − μ)(m_k − μ)ᵀ
    # (K·D² flops instead of N·D²). The second LDA's features are new: its scatter is formed directly.
    mu, g = centred(x)
    means, counts = class_means(f, pos, k)
    b = (means - mu) * counts.sqrt()[:, None]
    sw = (g - b.T @ b) / len(f)
    if not bool(torch.trace(sw) > 0):  # the power iteration's 0/0 (the reference's NaN)
        raise undefined("sfda", "the within-class scatter is zero, so the shrinkage (from its top eigenvalue) is "
                                "0/0", x)
    prob, shrink = lda_probs(f, pos, k, sw=sw)
    prob = torch.softmax(prob, dim=1)  # the reference's "soften" step: softmax of probabilities
    outer = (means.sum(0) - means) / (k - 1)  # unweighted mean of the other classes' means
    w = prob.gather(1, pos[:, None])
    mixed = w * f + (1 - w) * outer[pos]
    prob2, _ = lda_probs(mixed, pos, k, shrink)
    return prob2.gather(1, pos[:, None]).mean().item()


@register_proxy("sfda", primary="sfda", higher_is_better=True, needs_test=False, best=1.0)  # a mean probability
def sfda(train_x, train_y, test_x=None, test_y=None, **_):
    """SFDA (Shao et al. 2022): regularised Fisher discriminant with ConfMix, mean true-class probability."""
    check_inputs(train_x, train_y, "sfda")
    return {"sfda": sfda_value(train_x, train_y)}
