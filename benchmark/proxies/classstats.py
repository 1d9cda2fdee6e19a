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


def gram_eigvalsh(z: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of zᵀz via the smaller of zᵀz and zzᵀ (same nonzero spectrum), ascending; cost min(n, d)³."""
    n, d = z.shape
    return torch.linalg.eigvalsh(z.T @ z if d <= n else z @ z.T)


def pca(x: torch.Tensor, n_components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact PCA (projections, explained variances with 1/(N-1)) from the covariance's eigendecomposition.

    Equals sklearn's PCA(svd_solver='full') up to the sign of each component, which none of the estimators
    that use it (GBC, NCTI) can see; O(N D² + D³) instead of a full SVD of the N x D matrix."""
    xc = x - x.mean(0)
    if x.shape[1] <= x.shape[0]:
        evals, evecs = torch.linalg.eigh(xc.T @ xc)
        evals, evecs = evals.flip(0)[:n_components], evecs.flip(1)[:, :n_components]
        proj = xc @ evecs
    else:  # more dimensions than samples: left singular vectors from the N x N Gram matrix
        evals, u = torch.linalg.eigh(xc @ xc.T)
        evals, u = evals.flip(0)[:n_components], u.flip(1)[:, :n_components]
        proj = u * evals.clamp_min(0).sqrt()
    return proj, evals.clamp_min(0) / (x.shape[0] - 1)
