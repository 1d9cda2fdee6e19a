"""L2-regularised multinomial logistic regression with a weight-decay sweep chosen on validation."""
from __future__ import annotations

import numpy as np
import torch

from ..checks import integer, list_of, number, optional, positive
from ..data.splits import stratified_carve
from .base import accuracies, check_inputs, register_proxy


def default_wds(n: int = 45, lo: float = 1e-6, hi: float = 1e5) -> list[float]:
    """Kornblith et al. 2019 / Ericsson et al. 2021: 45 log-spaced values over [1e-6, 1e5]."""
    return np.logspace(np.log10(lo), np.log10(hi), n).tolist()


STOP_SHRINK, STOP_MARGIN = 0.01, 10.0  # the stopping rule's safety factors (see Problem.fit)


class _Converged(Exception):
    pass


class Problem:
    """One training set prepared for a sweep: float64 features rotated into the eigenbasis of XᵀX/n.

    Why float64: the weak end of the sweep needs the objective to ~1e-7 relative, below float32's resolution of a
    sum over thousands of samples; and float32's Rᵀ X reduction was measured to change with the thread count under
    MKL (float64's did not), so float64 is what makes the stopping point, and the results, thread-independent.
    Why the rotation: in the eigenbasis the data part of the Hessian is diagonal up to the per-sample curvature,
    so a diagonal rescaling (see `fit`) makes L-BFGS see a roughly unit Hessian at every wd; without it the
    condition number spans the eigenvalue range of XᵀX times the wd range, and L-BFGS stalls at weak wd.
    """

    def __init__(self, x, y, n_classes):
        x = x.double()
        self.n, self.k = len(x), n_classes
        try:
            lam, q = torch.linalg.eigh(x.T @ x / len(x))
        except RuntimeError:  # LAPACK's eigh can fail to converge with many repeated (zero) eigenvalues, as
            # dead channels give (seen: EfficientNet-Lite at 32 px); the SVD of X spans the same eigenbasis.
            _, s, vh = torch.linalg.svd(x, full_matrices=False)
            lam, q = (s ** 2 / len(x)).flip(0), vh.flip(0).T
        # Directions with no data (D > N, or dead channels) carry only the penalty, so their optimal weight is 0:
        # dropping them is exact and makes few-shot problems N-dimensional instead of D-dimensional.
        keep = lam > lam[-1] * x.shape[1] * torch.finfo(x.dtype).eps
        self.lam, self.q = lam[keep], q[:, keep]
        self.d = int(keep.sum())
        self.x = x @ self.q
        self.onehot = torch.nn.functional.one_hot(y, n_classes).to(x.dtype)
        self.evals = 0  # objective + gradient evaluations so far (each costs two N x D x K products)

    def rotate(self, params):
        return params[0].double() @ self.q, params[1].double()

    def unrotate(self, params, dtype):
        return (params[0] @ self.q.T).to(dtype), params[1].to(dtype)

    def objective(self, params, wd) -> float:
        """Σ_i CE_i + wd/2 ‖W‖² at rotated params (‖W‖ is rotation-invariant)."""
        W, b = params
        logp = torch.log_softmax(torch.addmm(b, self.x, W.T), dim=1)
        return (-(self.onehot * logp).sum() + 0.5 * wd * (W * W).sum()).item()

    def fit(self, wd, start=None, max_iter=10000, tol=1e-6):
        """Rotated (W, b) minimising Σ_i CE_i + wd/2 ‖W‖², objective within ~`tol` relative of the optimum.

        L-BFGS on rescaled variables W = V·diag(δ), b = c·δ_b with δ_j = (s·n·λ_j + wd)^(-1/2), δ_b = (s·n)^(-1/2):
        the inverse square root of the Hessian's diagonal if every sample had curvature s (s: the mean softmax
        curvature p(1-p) at the start point). The stopping rule estimates the objective's distance to its optimum
        as ½ Σ g_j² / (s'·n·λ_j + wd) (Newton's decrement with the same diagonal Hessian), which means the same
        at every wd and N, and stops when it is under tol/STOP_MARGIN of the objective. s' = STOP_SHRINK·s: on
        separable few-shot data most samples carry almost no curvature, and with s' = s the estimate was measured
        up to 8x too optimistic at weak wd; with s' = s/100 and a 10x margin the measured gap (against a float64
        Newton solve, tests/test_linear_probe.py) stayed under tol/2 at every wd. Returns (params, converged).
        """
        x, onehot, n = self.x, self.onehot, self.n
        if start is None:
            W = torch.zeros(self.k, self.d, dtype=x.dtype, device=x.device)
            b = torch.zeros(self.k, dtype=x.dtype, device=x.device)
        else:
            W, b = start
        p = torch.softmax(torch.addmm(b, x, W.T), dim=1)
        s = max((p * (1 - p)).mean().item(), 1e-12)
        dW = (s * n * self.lam + wd).rsqrt()
        db = torch.full_like(b, (s * n) ** -0.5)
        V = (W / dW).requires_grad_(True)
        c = (b / db).requires_grad_(True)
        # The stopping estimate uses a curvature STOP_SHRINK times lower than the variables' scaling: on separable
        # data most samples have almost no curvature, and the mean would make the estimate too optimistic.
        wstop = (STOP_SHRINK * s * n * self.lam + wd).reciprocal()
        wstop_b = 1.0 / (STOP_SHRINK * s * n)
        target = tol / STOP_MARGIN

        def closure():
            self.evals += 1
            with torch.no_grad():
                Wc = V * dW
                logp = torch.log_softmax(torch.addmm(c * db, x, Wc.T), dim=1)
                loss = -(onehot * logp).sum() + 0.5 * wd * (Wc * Wc).sum()
                r = logp.exp() - onehot
                # Analytic gradient (Rᵀ X, not autograd): exact, and no graph per evaluation. W stays [K, D]
                # (nn.Linear's layout): both products then read X row-major, measured 4x faster on CPU.
                gW, gb = torch.addmm(Wc, r.T, x, beta=wd), r.sum(0)
                V.grad, c.grad = gW * dW, gb * db
                if 0.5 * ((gW * gW * wstop).sum() + (gb * gb).sum() * wstop_b) <= target * loss:
                    raise _Converged  # params hold this point; torch's LBFGS leaves them there
            return loss

        opt = torch.optim.LBFGS([V, c], lr=1, max_iter=max_iter, max_eval=2 * max_iter, tolerance_grad=0,
                                tolerance_change=0, history_size=20, line_search_fn="strong_wolfe")
        try:
            opt.step(closure)
            converged = False  # the iteration cap, or no further progress possible in float64
        except _Converged:
            converged = True
        return (V.detach() * dW, c.detach() * db), converged


def fit_logreg(x, y, n_classes, wd, w0=None, max_iter=10000, tol=1e-6):
    """Minimise Σ_i CE_i + wd/2 ‖W‖² (sklearn's objective with C = 1/wd; the intercept is not penalised) to
    within ~`tol` relative of the optimum. Returns (W [K, D], b [K]) in x's dtype."""
    prob = Problem(x, y, n_classes)
    params, _ = prob.fit(wd, None if w0 is None else prob.rotate(w0), max_iter, tol)
    return prob.unrotate(params, x.dtype)


def predict(params, x):
    W, b = params
    return torch.addmm(b, x, W.T).argmax(1)


STD_FLOOR = 0.01  # of the mean channel std


def standardisation(x):
    """(mean, std) per channel, std floored at 1% of the mean channel std: a near-constant channel (dead ReLUs
    are common at low resolution) would otherwise be blown up to unit variance, making the probe fit noise and
    the raw-feature head it hands to LP-FT huge (seen: |W| = 314 at 32 px, and LP-FT collapsing)."""
    mean, std = x.mean(0), x.std(0)
    return mean, std.clamp_min(STD_FLOOR * std.mean().item() + 1e-12)


def _standardise(fit_x, *others):
    """(mean, std, fit_x and others standardised with fit_x's statistics)."""
    mean, std = standardisation(fit_x)
    return (mean, std, *[(t - mean) / std for t in (fit_x, *others)])


def raw_head(params, mean, std):
    """Fold standardisation into the weights: (weight [K, D], bias [K]) acting on raw features."""
    W, b = params
    return (W / std).contiguous(), b - W @ (mean / std)


@register_proxy("linear", primary="top1", higher_is_better=True, percent=True, hp_keys=("wd", "n_wd"), best=100.0,
                ranges=dict(wds=optional(list_of(positive(), unique=True), "empty (the log sweep)"),
                            n_wd=integer(1), wd_min=positive(), wd_max=positive(), max_iter=integer(1),
                            tol=positive(), val_fraction=number(0, 1, lo_open=True, hi_open=True), seed=integer(0)))
def linear(train_x, train_y, test_x=None, test_y=None, *, val_x=None, val_y=None, wds=None, n_wd=45,
           wd_min=1e-6, wd_max=1e5, max_iter=10000, tol=1e-6, standardize=True, val_fraction=0.2, seed=0):
    """Linear probe: logistic regression, L2 chosen on validation over a log sweep, refit on train+val.

    Dead or constant features are defined: their directions carry no data and are dropped (see `Problem`), so the
    probe is left with its biases and predicts the training prior (chance-level top-1)."""
    check_inputs(train_x, train_y, "linear", min_per_class=1 if val_x is not None else 2)
    if val_x is None:
        keep, carved = stratified_carve(train_y.cpu().numpy(), val_fraction, seed)
        keep, carved = torch.as_tensor(keep), torch.as_tensor(carved)
        train_x, train_y, val_x, val_y = train_x[keep], train_y[keep], train_x[carved], train_y[carved]
    k = int(max(train_y.max(), val_y.max(), -1 if test_y is None else test_y.max())) + 1
    tx, vx = train_x.float(), val_x.float()
    mean = torch.zeros(tx.shape[1], device=tx.device)
    std = torch.ones_like(mean)
    if standardize:
        mean, std, tx, vx = _standardise(tx, vx)
    # Strongest regularisation first: each solution warm-starts the next, weaker one.
    sweep = sorted(wds if wds is not None else default_wds(n_wd, wd_min, wd_max), reverse=True)
    prob = Problem(tx, train_y, k)
    vr = vx.double() @ prob.q
    best, params, curve, unsolved = None, None, [], 0
    for wd in sweep:
        params, ok = prob.fit(wd, params, max_iter, tol)
        unsolved += not ok
        acc = 100.0 * (predict(params, vr) == val_y).double().mean().item()
        curve.append(acc)
        if best is None or acc > best[1]:
            best = (wd, acc, params)
    wd, val_acc, w_best = best
    out = {"wd": wd, "val_top1": val_acc, "n_wd": len(sweep), "val_curve": curve}
    w_best = prob.unrotate(w_best, tx.dtype)
    if test_x is not None:
        full_x, full_y = torch.cat([train_x, val_x]).float(), torch.cat([train_y, val_y])
        ex = test_x.float()
        if standardize:
            _, _, full_x, ex = _standardise(full_x, ex)
        full = Problem(full_x, full_y, k)
        params, ok = full.fit(wd, full.rotate(w_best), max_iter, tol)
        unsolved += not ok
        out.update(accuracies(predict(full.unrotate(params, torch.float64), ex.double()), test_y))
    out["unconverged_fits"] = unsolved  # fits stopped by max_iter or float64's floor before reaching tol
    # The train-only solution at the chosen wd (no validation images in it), for LP-FT's head.
    out["head"] = raw_head(w_best, mean, std)
    return out
