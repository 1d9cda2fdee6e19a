"""Shared pieces of the analytic transferability estimators: float64 copies, class indices, means, PCA."""
from __future__ import annotations

import torch


def float64(x: torch.Tensor) -> torch.Tensor:
    """Closed-form estimators cancel large terms (evidences, log-determinants): float64 on the data's device."""
    return x.to(torch.float64)


def class_index(y: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Labels -> positions 0..K-1 (sorted class order, as np.unique in the reference codes) and K."""
    classes, pos = torch.unique(y, return_inverse=True)
    return pos, len(classes)


def class_means(x: torch.Tensor, pos: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[K, D] class means and [K] class sizes (in x's dtype)."""
    counts = torch.bincount(pos, minlength=k).to(x.dtype)
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, pos, x)
    return sums / counts[:, None], counts


def one_hot(pos: torch.Tensor, k: int, dtype) -> torch.Tensor:
    return torch.nn.functional.one_hot(pos, k).to(dtype)


def gram(z: torch.Tensor) -> torch.Tensor:
    """zᵀz. On the CPU through NumPy, whose `a.T @ a` on one buffer is a BLAS syrk: half the flops of the
    general product torch runs (2.1 s against 4.0 s at 50,000 x 2,048 float64 here), and exactly symmetric."""
    if z.device.type == "cpu" and z.dtype == torch.float64 and not z.requires_grad:
        a = z.numpy()
        return torch.from_numpy(a.T @ a)
    return z.T @ z


def gram_eigvalsh(z: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of zᵀz via the smaller of zᵀz and zzᵀ (same nonzero spectrum), ascending; cost min(n, d)³."""
    n, d = z.shape
    return torch.linalg.eigvalsh(gram(z) if d <= n else gram(z.T))
