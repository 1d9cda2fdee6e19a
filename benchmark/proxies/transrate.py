"""TransRate (Huang et al. 2022): coding rate of all features minus the class-weighted coding rate of each
class's features. Higher = more transferable."""
from __future__ import annotations

import torch

from ..checks import number
from .base import check_inputs, register_proxy, undefined
from .classstats import class_index, float64, gram_eigvalsh

VARIANTS = ("official", "tllib")


def transrate_value(x, y, eps: float = 1e-4, variant: str = "official") -> float:
    """`official` (Long-Kai/TransRate): centre, L2-normalise rows, eigenvalues λ of ZᵀZ/n and of each
    Z_kᵀZ_k/n_k; rz = Σ log(1 + λ/eps)/(2·rank Z), rzc = Σ_k (n_k/N) Σ log(1 + λ_k/eps)/(2·rank Z); rz − rzc.
    `tllib` (Transfer-Learning-Library's 10-line form): centre only; ½ logdet(I + ZᵀZ/(n·eps)), classes
    weighted 1/K, no rank normalisation. Eigenvalues come from the smaller Gram matrix (same nonzero spectrum)."""
    if variant not in VARIANTS:
        raise ValueError(f"transrate: variant must be one of {VARIANTS}, got '{variant}'")
    z = float64(x)
    z = z - z.mean(0)
    pos, k = class_index(y)
    n, d = z.shape
    if variant == "official":
        norms = z.norm(dim=1, keepdim=True)
        if not bool((norms > 0).all()):  # a row at the mean has no direction: the reference divides 0/0 (NaN)
            raise undefined("transrate", f"{int((norms == 0).sum())} centred feature row(s) are zero, so their "
                                         f"unit rows are 0/0", x)
        z = z / norms
    lam = gram_eigvalsh(z) / n
    rz = torch.log1p(lam.abs() / eps).sum()  # Σ log(1 + λ/eps) = logdet(I + ZᵀZ/(n·eps))
    rzc = torch.zeros((), dtype=z.dtype, device=z.device)
    for c in range(k):
        zc = z[pos == c]
        rc = torch.log1p((gram_eigvalsh(zc) / len(zc)).abs() / eps).sum()
        rzc = rzc + (rc * len(zc) / n if variant == "official" else rc / k)
    if variant == "tllib":
        return ((rz - rzc) / 2).item()
    # np.linalg.matrix_rank of the d x d matrix ZᵀZ/n: tolerance σ_max · d · eps(float64)
    rank = int((lam.abs() > lam.abs().max() * d * torch.finfo(torch.float64).eps).sum())
    return ((rz - rzc) / (2 * rank)).item()

@register_proxy("transrate", primary="transrate", higher_is_better=True, needs_test=False,
                ranges={"eps": number(0, lo_open=True)})
def transrate(train_x, train_y, test_x=None, test_y=None, *, eps: float = 1e-4, variant: str = "official"):
    """TransRate (Huang et al. 2022), the authors' eigenvalue form (centred, unit rows, n_k/N class weights, / rank)."""
    check_inputs(train_x, train_y, "transrate")
    return {"transrate": transrate_value(train_x, train_y, eps, variant)}
