"""The centred second moment that several estimators share, computed once per feature tensor.

LogME, H-score, shrinkage H-score, SFDA, GBC, NCTI and N-LEEP each need the D x D centred Gram matrix
G = (f − μ)ᵀ(f − μ) of the same train features (N·D² flops: the dominant cost at N = 50,000, D = 2,048), and
H-score, shrinkage H-score, GBC, NCTI and N-LEEP its eigendecomposition (D³). The runner hands every proxy of a
(model, dataset, seed) the same tensor object, so a memo keyed on that object's identity, and invalidated by
an in-place change (`Tensor._version`), computes them once while keeping every proxy a pure function of its
arguments. Entries die with their tensor."""
from __future__ import annotations

import weakref

import torch

from .classstats import float64, gram

# id(tensor) -> (weak reference, version, {name: value}). Not a WeakKeyDictionary: a tensor's `==` is
# element-wise, which breaks the dictionary's key comparison.
_MEMO: dict[int, tuple] = {}


def _version(x: torch.Tensor) -> int:
    # Inference tensors (features fresh from extraction) have no version counter; they cannot be changed in
    # place outside inference mode either, so one version is exact.
    return -1 if x.is_inference() else x._version


def memo(x: torch.Tensor, name: str, compute):
    """compute() once per (tensor object, in-place version of its data)."""
    entry = _MEMO.get(id(x))
    if entry is None or entry[0]() is not x or entry[1] != _version(x):
        if entry is None or entry[0]() is not x:
            weakref.finalize(x, _MEMO.pop, id(x), None)
        entry = (weakref.ref(x), _version(x), {})
        _MEMO[id(x)] = entry
    slot = entry[2]
    if name not in slot:
        slot[name] = compute()
    return slot[name]


def peek(x: torch.Tensor, name: str):
    """The memoised statistic `name` of x if it is there and current, else None (computes nothing)."""
    entry = _MEMO.get(id(x))
    if entry is None or entry[0]() is not x or entry[1] != _version(x):
        return None
    return entry[2].get(name)


def clear() -> None:
    """Forget every memoised statistic (tests compare cold and warm values)."""
    _MEMO.clear()


def centred(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float64 mean μ [D], centred Gram G = (f − μ)ᵀ(f − μ) [D, D]) of x's rows."""
    def compute():
        f = float64(x)
        mu = f.mean(0)
        fc = f - mu
        return mu, gram(fc)
    return memo(x, "centred", compute)


def centred_eigh(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of the centred Gram matrix G."""
    return memo(x, "centred_eigh", lambda: torch.linalg.eigh(centred(x)[1]))


def top_eigh(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest eigenpairs of G (descending): from the full eigendecomposition when another estimator has
    made it; otherwise, on the CPU and for k <= D/4, LAPACK's subset solver (syevr), 3-4x faster than the full one
    at D = 1,280-2,048 (NCTI and GBC keep 64 components; torch has no subset eigh)."""
    d = x.shape[1]
    full = peek(x, "centred_eigh")
    if full is None and x.device.type == "cpu" and k <= d // 4:
        def compute():
            import scipy.linalg
            w, v = scipy.linalg.eigh(centred(x)[1].numpy(), subset_by_index=[d - k, d - 1], driver="evr")
            return torch.from_numpy(w[::-1].copy()), torch.from_numpy(v[:, ::-1].copy())
        return memo(x, f"top_eigh{k}", compute)
    evals, evecs = full if full is not None else centred_eigh(x)
    return evals.flip(0)[:k], evecs.flip(1)[:, :k]


def pca(x: torch.Tensor, n_components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact PCA of x's rows (float64 projections, explained variances with 1/(N-1)) from the centred Gram
    matrix's eigendecomposition, shared with the other estimators when D <= N.

    Equals sklearn's PCA(svd_solver='full') up to the sign of each component, which none of the estimators
    that use it (GBC, NCTI, N-LEEP) can see; O(N D² + D³) instead of a full SVD of the N x D matrix."""
    n, d = x.shape
    if d <= n:
        mu = centred(x)[0]
        evals, evecs = top_eigh(x, n_components)
        proj = float64(x) @ evecs - mu @ evecs  # no centred N x D copy
    else:  # more dimensions than samples: left singular vectors from the N x N Gram matrix
        xc = float64(x)
        xc = xc - xc.mean(0)
        evals, u = torch.linalg.eigh(gram(xc.T))
        evals, u = evals.flip(0)[:n_components], u.flip(1)[:, :n_components]
        proj = u * evals.clamp_min(0).sqrt()
    return proj, evals.clamp_min(0) / (n - 1)
