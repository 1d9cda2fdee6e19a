"""L2-regularised multinomial logistic regression with a weight-decay sweep chosen on validation."""
from __future__ import annotations

import numpy as np
import torch

from ..checks import integer, list_of, number, optional, positive
from ..data.splits import stratified_carve
from .base import accuracies, check_inputs, register_proxy
from .linear_data import CHUNK_BYTES
from .linear_solve import Problem  # noqa: F401  (the solver; re-exported for tests and benchmarks)

SOLVER = "newton-cg"  # recorded beside the tolerance: a stated tolerance is part of the method


def default_wds(n: int = 45, lo: float = 1e-6, hi: float = 1e5) -> list[float]:
    """Kornblith et al. 2019 / Ericsson et al. 2021: 45 log-spaced values over [1e-6, 1e5]."""
    return np.logspace(np.log10(lo), np.log10(hi), n).tolist()


def fit_logreg(x, y, n_classes, wd, w0=None, max_iter=10000, tol=1e-6):
    """Minimise Σ_i CE_i + wd/2 ‖W‖² (sklearn's objective with C = 1/wd; the intercept is not penalised) to
    within ~`tol` relative of the optimum. Returns (W [K, D], b [K]) in x's dtype."""
    prob = Problem(x, y, n_classes)
    params, _ = prob.fit(wd, None if w0 is None else prob.rotate(w0), max_iter, tol)
    return prob.unrotate(params, x.dtype)


def predict(params, x, dtype=None):
    """Predicted classes, in row chunks (`dtype`: the arithmetic's, float64 for the sweep's decisions) so that
    large feature sets are never converted as a whole."""
    W, b = params
    dtype = dtype or W.dtype
    W, b = W.to(dtype), b.to(dtype)
    rows = max(1, CHUNK_BYTES // (8 * max(x.shape[1], len(b))))
    return torch.cat([torch.addmm(b, x[i:i + rows].to(dtype), W.T).argmax(1) for i in range(0, len(x), rows)])


STD_FLOOR = 0.01  # of the mean channel std


def standardisation(*parts):
    """(mean, std) per channel over the rows of all `parts` (train, or train and val for the refit; never
    concatenated), in float64 over row chunks (two passes), returned in float32; std is the unbiased one, floored
    at 1% of the mean channel std: a near-constant channel (dead ReLUs are common at low resolution) would
    otherwise be blown up to unit variance, making the probe fit noise and the raw-feature head it hands to LP-FT
    huge (seen: |W| = 314 at 32 px, and LP-FT collapsing)."""
    n, dim, dev = sum(len(t) for t in parts), parts[0].shape[1], parts[0].device
    rows = max(1, CHUNK_BYTES // (8 * dim))
    total = torch.zeros(dim, dtype=torch.float64, device=dev)
    for t in parts:
        for i in range(0, len(t), rows):
            total += t[i:i + rows].sum(0, dtype=torch.float64)
    mean = total / n
    sq = torch.zeros_like(mean)
    for t in parts:
        for i in range(0, len(t), rows):
            sq += (t[i:i + rows].double() - mean).square_().sum(0)
    std = (sq / max(n - 1, 1)).sqrt_()
    return mean.float(), std.clamp_min(STD_FLOOR * std.mean().item() + 1e-12).float()


def _standardise(fit_x, *others):
    """(mean, std, fit_x and others standardised with fit_x's statistics): explicit copies, for tests and
    benchmarks; the proxy itself standardises chunk by chunk inside Problem."""
    mean, std = standardisation(fit_x)
    return (mean, std, *[(t - mean) / std for t in (fit_x, *others)])


def raw_predict(params, mean, std, x):
    """Predicted classes of rotated-back params (W [K, D], b) that act on standardised features, on raw `x`: the
    standardisation folded into the head in float64 (no standardised copy of x)."""
    W, b = params
    return predict(raw_head((W.double(), b.double()), mean.double(), std.double()), x, torch.float64)


def raw_head(params, mean, std):
    """Fold standardisation into the weights: (weight [K, D], bias [K]) acting on raw features."""
    W, b = params
    return (W / std).contiguous(), b - W @ (mean / std)


@register_proxy("linear", primary="top1", higher_is_better=True, percent=True,
                hp_keys=("wd", "n_wd", "tol", "solver", "hessian"), best=100.0,
                ranges=dict(wds=optional(list_of(positive(), unique=True), "empty (the log sweep)"),
                            n_wd=integer(1), wd_min=positive(), wd_max=positive(), max_iter=integer(1),
                            tol=positive(), val_fraction=number(0, 1, lo_open=True, hi_open=True), seed=integer(0)))
def linear(train_x, train_y, test_x=None, test_y=None, *, val_x=None, val_y=None, wds=None, n_wd=45,
           wd_min=1e-6, wd_max=1e5, max_iter=10000, tol=1e-6, standardize=True, val_fraction=0.2, seed=0,
           hessian_float32=True):
    """Linear probe: logistic regression, L2 chosen on validation over a log sweep, refit on train+val.

    Dead or constant features are defined: their directions carry no data and are dropped (see `Problem`), so the
    probe is left with its biases and predicts the training prior (chance-level top-1). `hessian_float32`: large
    (streamed) problems run their Hessian products in float32 (every fit still stops by the float64 rule; the
    steps, so the solutions within `tol`, may then differ with the thread count); false keeps them float64."""
    check_inputs(train_x, train_y, "linear", min_per_class=1 if val_x is not None else 2)
    if val_x is None:
        keep, carved = stratified_carve(train_y.cpu().numpy(), val_fraction, seed)
        keep, carved = torch.as_tensor(keep), torch.as_tensor(carved)
        train_x, train_y, val_x, val_y = train_x[keep], train_y[keep], train_x[carved], train_y[carved]
    k = int(max(train_y.max(), val_y.max(), -1 if test_y is None else test_y.max())) + 1
    # Features stay as the caller holds them (float32 from the cache): standardisation is applied chunk by chunk
    # inside Problem and folded into the head for predictions, so no copy of train, val or test is ever made.
    tx, vx = train_x.float(), val_x.float()  # no copy when already float32
    mean = torch.zeros(tx.shape[1], device=tx.device)
    std = torch.ones_like(mean)
    if standardize:
        mean, std = standardisation(tx)
    # Strongest regularisation first: each solution warm-starts the next, weaker one.
    sweep = sorted(wds if wds is not None else default_wds(n_wd, wd_min, wd_max), reverse=True)
    prob = Problem(tx, train_y, k, hess_float32=hessian_float32, **(dict(shift=mean, scale=std) if standardize else {}))
    hessians = [prob.data.hess_float32]  # streamed problems only: see Features
    best, curve, unsolved = None, [], 0
    for wd, params, ok in prob.sweep(sweep, max_iter, tol):
        unsolved += not ok
        acc = 100.0 * (raw_predict(prob.unrotate(params, torch.float64), mean, std, vx) == val_y).double().mean().item()
        curve.append(acc)
        if best is None or acc > best[1]:
            best = (wd, acc, params)
    wd, val_acc, w_best = best
    out = {"wd": wd, "val_top1": val_acc, "n_wd": len(sweep), "val_curve": curve, "tol": tol, "solver": SOLVER}
    w_best = prob.unrotate(w_best, torch.float32)
    del prob  # its float64 buffers before the refit builds its own
    if test_x is not None:
        full_y = torch.cat([train_y, val_y])
        mean2, std2 = standardisation(tx, vx) if standardize else (mean, std)
        # The train solution re-expressed for the new standardisation: the same raw-feature head.
        W, b = raw_head(w_best, mean, std)
        start = (W * std2, b + W @ mean2)
        full = Problem([tx, vx], full_y, k, hess_float32=hessian_float32,
                       **(dict(shift=mean2, scale=std2) if standardize else {}))
        hessians.append(full.data.hess_float32)  # train+val can stream where train alone stayed resident
        params, ok = full.fit(wd, full.rotate(start), max_iter, tol)
        unsolved += not ok
        out.update(accuracies(raw_predict(full.unrotate(params, torch.float64), mean2, std2, test_x), test_y))
    out["unconverged_fits"] = unsolved  # fits stopped by max_iter or float64's floor before reaching tol
    # Which Hessian products ran: one word when the sweep and the refit agree, both when they do not.
    names = ["float32" if h else "float64" for h in hessians]
    out["hessian"] = names[0] if len(set(names)) == 1 else f"sweep {names[0]}, refit {names[1]}"
    # The train-only solution at the chosen wd (no validation images in it), for LP-FT's head.
    out["head"] = raw_head(w_best, mean, std)
    return out
