"""ETran (Gholami et al. 2023), pool-relative: an energy term and an LDA term per model, each min-max scaled
across the models of one dataset and mixed 0.15/0.85 (the authors' tw.py). Higher = more transferable."""
from __future__ import annotations

import torch

from .base import check_inputs, minmax_combine, register_proxy
from .classstats import class_index, class_means, float64


def energy_value(x, fraction: float = 0.005) -> float:
    """Mean of the lowest `fraction` of logsumexp over feature dimensions (the reference's Energy_Score(x, 0.5,
    'bot') keeps int(0.5·10)·N//1000 samples). At least one sample is kept (the reference averages an empty
    set, NaN, below N = 200)."""
    e = torch.logsumexp(float64(x), dim=1)
    keep = max(1, int(round(fraction * 1000)) * len(e) // 1000)
    return e.sort().values[:keep].mean().item()


def lda_value(x, y) -> float:
    """ETran's `LDA_Score`: its LDA keeps every eigenvector of eigh(inv(S_w) S_b) (orthonormal), so
    coef = μ and the score is a nearest-class-mean softmax: mean_i softmax_k(x_i·μ_k − ½‖μ_k‖² + log π_k)[y_i]."""
    f = float64(x)
    pos, k = class_index(y)
    means, counts = class_means(f, pos, k)
    logits = f @ means.T - 0.5 * (means ** 2).sum(1) + (counts / len(f)).log()
    return torch.softmax(logits, dim=1).gather(1, pos[:, None]).mean().item()


@register_proxy("etran", primary="etran", higher_is_better=True, needs_test=False,
                combine=minmax_combine({"energy": 0.15, "lda": 0.85}))
def etran(train_x, train_y, test_x=None, test_y=None, **_):
    """ETran (Gholami et al. 2023): 0.15·mm(energy) + 0.85·mm(LDA score) over a dataset's models.

    Defined on dead features: all-zero rows give energy log D and the LDA score the class prior's mean."""
    check_inputs(train_x, train_y, "etran")
    return {"energy": energy_value(train_x), "lda": lda_value(train_x, train_y)}
