"""GBC (Pándy et al. 2022): minus the summed Bhattacharyya coefficients between per-class Gaussians of
PCA-64 features. Range [−K(K−1), 0]; higher = more transferable (classes overlap less)."""
from __future__ import annotations

import torch

from ..checks import integer
from .base import check_inputs, register_proxy
from .classstats import class_index, class_means, float64
from .moments import pca

GAUSSIANS = ("spherical", "diagonal")


def gbc_value(x, y, dims: int = 64, gaussian: str = "spherical") -> float:
    """The google-research code: per class mean and population variance (floored at 1e-4); spherical takes
    the mean variance. BD = Σ(Δμ)²/σ̄/8 + ½(Σ log σ̄ − ½Σ log σ₁ − ½Σ log σ₂); GBC = −Σ_{c≠c'} exp(−BD).
    PCA is exact and in float64 (the pipeline casts its PCA output to float32); distances are sign-blind."""
    if gaussian not in GAUSSIANS:
        raise ValueError(f"gbc: gaussian must be one of {GAUSSIANS}, got '{gaussian}'")
    f = pca(x, dims)[0] if dims and x.shape[1] > dims else float64(x)
    pos, k = class_index(y)
    means, counts = class_means(f, pos, k)
    var = torch.zeros_like(means).index_add_(0, pos, (f - means[pos]) ** 2) / counts[:, None]
    var = var.clamp_min(1e-4)
    if gaussian == "spherical":
        var = var.mean(1, keepdim=True)
    avg = (var[:, None, :] + var[None, :, :]) / 2  # [K, K, D or 1]
    d2 = (means[:, None, :] - means[None, :, :]) ** 2
    logv = var.log().sum(1)
    bd = (d2 / avg).sum(2) / 8 + 0.5 * (avg.log().sum(2) - 0.5 * logv[:, None] - 0.5 * logv[None, :])
    off = ~torch.eye(k, dtype=torch.bool, device=f.device)
    return (-torch.exp(-bd[off]).sum()).item()


@register_proxy("gbc", primary="gbc", higher_is_better=True, needs_test=False, ranges={"dims": integer(1)})
def gbc(train_x, train_y, test_x=None, test_y=None, *, dims: int = 64, gaussian: str = "spherical"):
    """GBC (Pándy et al. 2022): −Σ Bhattacharyya coefficients of class Gaussians (spherical, PCA-64).

    Defined on dead features through the authors' variance floor (1e-4): classes with identical means overlap
    fully, so all-zero features give −K(K−1), the bottom of its range."""
    check_inputs(train_x, train_y, "gbc")
    return {"gbc": gbc_value(train_x, train_y, dims, gaussian)}
