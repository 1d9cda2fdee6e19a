"""PARC (Bolya et al. 2021): Spearman correlation (×100) between the representational dissimilarity matrix of
PCA-32 standardised features and that of the one-hot labels. Higher = more transferable."""
from __future__ import annotations

import numpy as np
import torch

from ..checks import integer
from .base import check_inputs, degenerate, register_proxy, undefined
from .classstats import class_index, float64

EXACT_MAX = 1 << 25  # pairs ranked exactly; above, dissimilarities are binned (see _binned_counts)
BINS = 1 << 22
LABEL_RDMS = ("numpy", "exact")


def _reduce(x: torch.Tensor, dims: int) -> torch.Tensor:
    """The reference's feature_reduce + StandardScaler. sklearn's randomized PCA (random_state=1919,
    iterated_power=1) is kept as is: its components' signs and approximation change PARC's row correlations."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler
    f = x.cpu().numpy().astype(np.float64)
    dims = min(dims, f.shape[0])
    if dims < f.shape[1]:
        f = PCA(n_components=dims, svd_solver="randomized", random_state=1919, iterated_power=1).fit_transform(f)
    return torch.as_tensor(StandardScaler().fit_transform(f), device=x.device)


def label_levels(k: int, label_rdm: str) -> np.ndarray:
    """[K, K] rank level of the label RDM between classes. The label RDM 1 − corrcoef(one-hot) is 0 within a
    class and 1 + 1/(K−1) across, but np.corrcoef's rounding splits those values into 3-4 distinct floats that
    depend only on the class pair (checked: the K x K table reproduces the N x N matrix of the reference),
    and Spearman ranks them apart. `numpy` keeps that split (the reference's value), `exact` the two values."""
    if label_rdm not in LABEL_RDMS:
        raise ValueError(f"parc: label_rdm must be one of {LABEL_RDMS}, got '{label_rdm}'")
    table = 1 - np.corrcoef(np.eye(k)) if label_rdm == "numpy" else 1.0 - np.eye(k)
    return np.unique(table, return_inverse=True)[1].reshape(k, k)


def spearman_from_counts(h: torch.Tensor) -> float:
    """Spearman ρ from joint counts h[g, l] of ordered tie groups g of one variable and l of the other: ρ is
    the Pearson correlation of average ranks (scipy's tie rule), and every rank is a function of counts."""
    h = h.to(torch.float64)
    m = h.sum()

    def ranks(c):
        return torch.cumsum(c, 0) - c + (c + 1) / 2

    h1, h2 = h.sum(1), h.sum(0)
    r1, r2 = ranks(h1), ranks(h2)
    mean = (m + 1) / 2
    var1 = (h1 * r1 ** 2).sum() / m - mean ** 2
    var2 = (h2 * r2 ** 2).sum() / m - mean ** 2
    cov = (r1 @ h @ r2) / m - mean ** 2
    return (cov / (var1 * var2).sqrt()).item()


def _pairs(z, pos, table):
    """Feature-RDM values and label-RDM levels of the strict upper triangle, in row chunks (O(chunk × N) temporaries)."""
    n = len(z)
    chunk = max(1, (1 << 23) // n)
    vals, levels = [], []
    for s in range(0, n - 1, chunk):
        e = min(n, s + chunk)
        block = 1 - z[s:e] @ z[s + 1:].T  # rows s..e-1 against columns s+1..n-1
        upper = torch.arange(s + 1, n, device=z.device)[None, :] > torch.arange(s, e, device=z.device)[:, None]
        vals.append(block[upper])
        levels.append(table[pos[s:e, None], pos[None, s + 1:]][upper])
    return torch.cat(vals), torch.cat(levels)


def _sort(v: torch.Tensor) -> torch.Tensor:
    # NumPy on the CPU: its SIMD sort takes 33 ms for 4.5 M float64 here, torch.sort 424 ms
    return torch.from_numpy(np.sort(v.numpy())) if v.device.type == "cpu" else torch.sort(v).values


def _searchsorted(a: torch.Tensor, v: torch.Tensor, side: str) -> torch.Tensor:
    if a.device.type == "cpu":
        return torch.from_numpy(np.searchsorted(a.numpy(), v.numpy(), side))
    return torch.searchsorted(a, v, side=side)


def spearman_exact(vals: torch.Tensor, levels: torch.Tensor, nl: int) -> float:
    """Spearman ρ of values against ordered levels 0..nl-1 with scipy's average ranks for ties, from sorts alone:
    a value's average rank is (#smaller + #not larger + 1)/2 in the sorted values, and ρ needs only each level's
    sum of those ranks, the tie groups' Σ c·r², and the level counts (no argsort of the pairs)."""
    m = len(vals)
    srt = _sort(vals)
    new = torch.ones(m, dtype=torch.bool, device=vals.device)
    new[1:] = srt[1:] != srt[:-1]
    starts = torch.nonzero(new).squeeze(1)
    c = torch.diff(torch.cat([starts, torch.tensor([m], device=vals.device)])).to(torch.float64)
    r = starts.to(torch.float64) + (c + 1) / 2
    n_l = torch.bincount(levels, minlength=nl).to(torch.float64)
    level_sum = torch.zeros(nl, dtype=torch.float64, device=vals.device)
    big = int(n_l.argmax())  # the most common level (between-class pairs) gets the rest of the total m(m+1)/2
    for lv in range(nl):
        if lv != big and n_l[lv] > 0:
            mine = _sort(vals[levels == lv])  # sorted keys: searchsorted walks srt in order (cache-friendly)
            left, right = _searchsorted(srt, mine, "left"), _searchsorted(srt, mine, "right")
            level_sum[lv] = ((left + right).to(torch.float64) + 1).sum() / 2
    level_sum[big] = m * (m + 1) / 2 - level_sum.sum()  # average ranks keep the total of ranks
    r2 = torch.cumsum(n_l, 0) - n_l + (n_l + 1) / 2
    mean = (m + 1) / 2
    var1 = (c * r ** 2).sum() / m - mean ** 2
    var2 = (n_l * r2 ** 2).sum() / m - mean ** 2
    cov = (r2 * level_sum).sum() / m - mean ** 2
    return (cov / (var1 * var2).sqrt()).item()


def _binned_counts(z, pos, table, nl):
    """Joint counts of (binned feature-RDM value, label-RDM level) over the strict upper triangle, O(chunk × N)
    memory: values in [0, 2] fall into 2²² bins (width 4.8e-7), whose members count as ties. By row blocks
    s..e: the block's own upper triangle (masked, small) and the rectangle against every later row (all of it upper: no mask, no gather of the pair list). Bin and level
    share one int32 code, counted once per block (2²⁵ pairs)."""
    n = len(z)
    tab = table.to(torch.int32)
    h = torch.zeros(BINS * nl, dtype=torch.int64, device=z.device)
    rows = max(1, (1 << 25) // n)

    half = torch.tensor(BINS / 2, dtype=z.dtype, device=z.device)

    def scaled(a, b):  # (1 − a bᵀ)·BINS/2 in one BLAS call
        return torch.addmm(half, a, b.T, alpha=-BINS / 2)

    def count(v, lv):
        code = v.clamp_(0, BINS - 1).to(torch.int32).mul_(nl).add_(lv)
        h.add_(torch.bincount(code.view(-1), minlength=BINS * nl))

    for s in range(0, n - 1, rows):
        e = min(n, s + rows)
        sq_i, sq_j = torch.triu_indices(e - s, e - s, 1, device=z.device)
        count(scaled(z[s:e], z[s:e])[sq_i, sq_j], tab[pos[s + sq_i], pos[s + sq_j]])
        if e < n:
            count(scaled(z[s:e], z[e:]), tab[pos[s:e]].gather(1, pos[e:].expand(e - s, -1)))
    return h.view(BINS, nl)


def parc_value(x, y, dims: int = 32, label_rdm: str = "numpy", exact_max: int = EXACT_MAX) -> float:
    if degenerate(x):  # before sklearn's PCA, which divides by the zero total variance
        raise undefined("parc", "every feature row is the same vector, so the correlations between rows are 0/0", x)
    f = _reduce(float64(x), dims)
    z = f - f.mean(1, keepdim=True)  # np.corrcoef of rows: centre and normalise each row
    norms = z.norm(dim=1, keepdim=True)
    if not bool((norms > 0).all()):  # np.corrcoef's 0/0 (NaN), which the sorts would turn into a number
        raise undefined("parc", f"{int((norms == 0).sum())} row(s) of the standardised PCA features are constant, "
                                f"so their correlations are 0/0", x)
    z = z / norms
    pos, k = class_index(y)
    table = torch.as_tensor(label_levels(k, label_rdm), device=z.device)
    nl, n = int(table.max()) + 1, len(z)
    if n * (n - 1) // 2 <= exact_max:  # every distinct value its own rank group
        return 100 * spearman_exact(*_pairs(z, pos, table), nl)
    return 100 * spearman_from_counts(_binned_counts(z, pos, table, nl))


@register_proxy("parc", primary="parc", higher_is_better=True, needs_test=False,
                ranges={"dims": integer(1), "max_samples": integer(0, why=" (0 = no subsampling)"), "seed": integer(0)})
def parc(train_x, train_y, test_x=None, test_y=None, *, seed: int = 0, dims: int = 32, max_samples: int = 0,
         label_rdm: str = "numpy"):
    """PARC (Bolya et al. 2021): 100 × Spearman ρ of feature and label dissimilarity matrices (PCA-32).

    A constant row of the standardised features (all rows, on dead features) has no correlation (0/0): an error."""
    check_inputs(train_x, train_y, "parc")
    out = {}
    if max_samples and len(train_y) > max_samples:  # optional, seeded, recorded subsample
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(train_y), generator=g)[:max_samples].to(train_x.device)
        train_x, train_y = train_x[idx], train_y[idx]
        out["parc_samples"] = max_samples
    out["parc"] = parc_value(train_x, train_y, dims, label_rdm)
    return out
