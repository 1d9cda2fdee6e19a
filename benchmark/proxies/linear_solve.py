"""The linear probe's solver: L2-regularised multinomial logistic regression, every point of a wd sweep solved to
a stated relative objective gap, in bounded memory, on whichever device the features are on."""
from __future__ import annotations

import math

import torch

from .linear_data import Features

STOP_SHRINK, STOP_MARGIN = 0.01, 10.0  # the stopping rule's safety factors (see Problem.fit)
CG_MAX = 250  # conjugate-gradient iterations per Newton step (a cap; the forcing rule ends most steps far sooner)


class Problem:
    """One training set prepared for a sweep, solved in the eigenbasis of XᵀX/n (see Features for the storage).

    Why the eigenbasis: there the data part of the Hessian is diagonal up to the per-sample curvature, so the
    diagonal preconditioner below sees a roughly unit Hessian at every wd; without it the condition number spans
    the eigenvalue range of XᵀX times the wd range. Why float64 arithmetic: the weak end of the sweep needs the
    objective to ~1e-7 relative, below float32's resolution of a sum over thousands of samples, and float64
    reductions were measured not to change with the thread count (float32's did under MKL). The one exception:
    streamed problems' Hessian-vector products, which only steer CG, run in float32 (`hess_float32`, see
    Features._hess_vec_float32); every stop is still decided in float64.
    """

    def __init__(self, x, y, n_classes, *, shift=None, scale=None, copy_bytes=None, chunk_bytes=None,
                 hess_float32=True):
        self.data = Features(x, y, n_classes, shift=shift, scale=scale, copy_bytes=copy_bytes, chunk_bytes=chunk_bytes,
                             hess_float32=hess_float32)
        self.n, self.k, self.d = self.data.n, n_classes, self.data.d
        self.lam, self.q = self.data.lam, self.data.q
        self.radius = None  # the trust region's radius where the last fit ended (the next fit's first)
        self.newton = self.cg = 0  # Newton steps and CG iterations so far
        self.evals = 0  # passes over the data (each: one or two N x D x K products), for profiling
        self.f_end = None  # the objective where the last fit ended (a float64 tensor)

    def rotate(self, params):
        return params[0].double() @ self.q, params[1].double()

    def unrotate(self, params, dtype):
        return (params[0] @ self.q.T).to(dtype), params[1].to(dtype)

    def zeros(self):
        dev = self.q.device
        return (torch.zeros(self.k, self.d, dtype=torch.float64, device=dev),
                torch.zeros(self.k, dtype=torch.float64, device=dev))

    def objective(self, params, wd) -> float:
        """Σ_i CE_i + wd/2 ‖W‖² at rotated params (‖W‖ is rotation-invariant)."""
        return self.data.loss(params[0], params[1], wd).item()

    def fit(self, wd, start=None, max_iter=10000, tol=1e-6, first=None):
        """Rotated (W, b) minimising Σ_i CE_i + wd/2 ‖W‖², objective within ~`tol` relative of the optimum.

        Trust-region Newton-CG (TRON's scheme, as LIBLINEAR solves this problem): each step runs Steihaug's CG on
        H·d = -g, preconditioned with the Hessian's diagonal, until the residual is under η‖g‖ with
        η = min(0.5, √(‖g‖/‖g₀‖)) (loose far away, tight near the optimum: superlinear convergence) or the step
        reaches the trust region's boundary; the radius grows after good model predictions on the boundary and
        shrinks after poor ones, and carries over to the next wd of a sweep. Each CG iteration is one
        Hessian-vector product (two N x D x K products with the stored softmax). A trust region, not a line search:
        from a far start (the refit on train+val) the Newton step of separable data is huge and a line search
        wasted hundreds of CG iterations building it; Steihaug's CG stops at the boundary instead.

        Stopping rule (unchanged from the L-BFGS solver it replaced, so the stated gap means the same): estimate
        the distance to the optimum as ½ Σ g_j² / (s'·n·λ_j + wd) (Newton's decrement with a diagonal Hessian in
        which every sample has curvature s' = STOP_SHRINK·s, s the mean softmax curvature p(1-p) at the start
        point, or a lower one met on the way) and stop when it is under tol/STOP_MARGIN of the objective. On
        separable few-shot data most samples carry almost no curvature; with s' = s the estimate was measured up
        to 8x too optimistic at weak wd; with s/100 and a 10x margin the measured gap (against a float64 Newton
        solve, tests/test_linear_probe.py) stays under tol/2 at every wd. `first`: loss_grad already evaluated at
        `start` (which is then taken as it is: already in the sum-zero subspace) by the latest call of loss_grad
        (its softmax is the shared buffer the next call overwrites). Returns (params, converged); the objective at
        the returned params is left in self.f_end."""
        data = self.data
        if first is None:
            W, b = self.zeros() if start is None else _sum_zero(start[0].double(), start[1].double())
            f, gW, gb, p = data.loss_grad(W, b, wd)
            self.evals += 1
        else:
            assert start is not None, "fit(first=...) needs the start it was evaluated at"
            (W, b), (f, gW, gb, p) = start, first
        s = (p * (1 - p)).mean().clamp_min(1e-12)
        target = tol / STOP_MARGIN
        g0, radius = None, (self.radius if start is not None else None)
        for _ in range(max_iter):
            # The lowest mean curvature met so far in this fit (the start point's, as the L-BFGS rule used, unless
            # a later point has less): from a far start the start point's curvature is no guide to the optimum's.
            s = torch.minimum(s, (p * (1 - p)).mean().clamp_min(1e-12))
            shrunk = STOP_SHRINK * s * self.n
            est = 0.5 * ((gW * gW / (shrunk * self.lam + wd)).sum() + (gb * gb).sum() / shrunk)
            gnorm = torch.sqrt((gW * gW).sum() + (gb * gb).sum())
            done, gnorm_f = torch.stack([est - target * f, gnorm]).tolist()  # this step's one host sync
            done = done <= 0
            if done:
                self.f_end = f
                return (W, b), True
            g0 = g0 or gnorm_f
            self.newton += 1
            m = data.hess_diag(p, wd)
            if radius is None:  # the preconditioned gradient's length (TRON's first radius, in the M-norm)
                radius = math.sqrt(_dot((gW, gb), (gW / m[0], gb / m[1])).item())
            while True:
                (dW, db), pred, hit = self._steihaug(gW, gb, p, m, wd, min(0.5, math.sqrt(gnorm_f / g0)) * gnorm_f,
                                                     radius)
                f1, gW1, gb1, p1 = data.loss_grad(W + dW, b + db, wd)
                self.evals += 1
                rho = ((f - f1) / pred).item()  # actual over predicted decrease: the step's one host sync
                dnorm = math.sqrt(_dot((dW, db), (dW * m[0], db * m[1])).item())
                if rho < 0.25:
                    radius = 0.25 * min(radius, dnorm)
                elif rho > 0.75 and hit:
                    radius *= 2
                if rho > 1e-4:
                    break
                p = data.loss_grad(W, b, wd)[3]  # rejected: the softmax buffer holds the trial point's
                self.evals += 1
                if radius < 1e-12 * (1 + math.sqrt(_dot((W, b), (W * m[0], b * m[1])).item())):
                    self.f_end = f
                    return (W, b), False  # no further progress possible in float64
            W, b, f, gW, gb, p = W + dW, b + db, f1, gW1, gb1, p1
            self.radius = radius
        self.f_end = f
        return (W, b), False

    def sweep(self, wds, max_iter=10000, tol=1e-6):
        """Solve every wd in the given order (strongest first), each fit warm-started from a prediction along the
        path: the secant through the last two solutions, extrapolated linearly in log wd (at weak wd the separable
        optimum grows like log 1/wd, so the secant is nearly exact there), or the last solution when the secant's
        objective is not lower. The start only speeds a fit up: every fit stops by the same rule. Comparing the
        two starts costs one pass, not two: the last solution's data term is its fit's objective less its penalty,
        so its objective at the new wd is known without a pass, and the guess's gradient, evaluated with its
        objective, is the fit's first step when the guess wins. Yields (wd, rotated params, converged)."""
        prev = cur = f_end = None
        for i, wd in enumerate(wds):
            start, first = cur, None
            if prev is not None:
                a = math.log(wd / wds[i - 1]) / math.log(wds[i - 1] / wds[i - 2])
                guess = (cur[0] + a * (cur[0] - prev[0]), cur[1] + a * (cur[1] - prev[1]))
                pen = (cur[0] * cur[0]).sum()
                f_cur = f_end - 0.5 * wds[i - 1] * pen + 0.5 * wd * pen
                lg = self.data.loss_grad(*guess, wd)
                self.evals += 1
                if (lg[0] < f_cur).item():
                    start, first = guess, lg
            params, ok = self.fit(wd, start, max_iter, tol, first)
            prev, cur, f_end = cur, params, self.f_end  # kept here: a caller may fit() between yields
            yield wd, params, ok

    def _steihaug(self, gW, gb, p, m, wd, atol, radius):
        """Steihaug's truncated CG on H·d = -g (preconditioner M = diag m, in the sum-zero subspace) inside the
        trust region ‖d‖_M <= radius. Returns (d, predicted decrease -(g·d + ½ dᵀHd), whether d is on the
        boundary)."""
        data = self.data
        r = (-gW, -gb)
        z = _sum_zero(r[0] / m[0], r[1] / m[1])
        d = (torch.zeros_like(gW), torch.zeros_like(gb))
        v, rz, hit = z, _dot(r, z), False
        for it in range(CG_MAX):
            hv = data.hess_vec(p, v[0], v[1], wd)
            self.evals += 1
            self.cg += 1
            alpha = rz / _dot(v, hv)
            new = (d[0] + alpha * v[0], d[1] + alpha * v[1])
            r_new = (r[0] - alpha * hv[0], r[1] - alpha * hv[1])
            # One host sync per Hessian product: the new step's M-norm, the new residual's norm and the curvature
            # along v together. vᵀHv <= 0 cannot happen with exact products (H is positive definite in the sum-zero
            # subspace); with float32 ones at a weak wd it could, and Steihaug's rule for it is the boundary along v.
            dm, rr, vhv = torch.stack([_dot(new, (new[0] * m[0], new[1] * m[1])), _dot(r_new, r_new),
                                       _dot(v, hv)]).tolist()
            if dm >= radius * radius or vhv <= 0:
                # to the boundary along v: the positive root of ‖d + τv‖²_M = radius²
                dd, dv = _dot(d, (d[0] * m[0], d[1] * m[1])), _dot(d, (v[0] * m[0], v[1] * m[1]))
                vv = _dot(v, (v[0] * m[0], v[1] * m[1]))
                tau = (-dv + torch.sqrt(dv * dv + vv * (radius * radius - dd))) / vv
                d, r, hit = (d[0] + tau * v[0], d[1] + tau * v[1]), (r[0] - tau * hv[0], r[1] - tau * hv[1]), True
                break
            d, r = new, r_new
            if math.sqrt(rr) <= atol:
                break
            z = _sum_zero(r[0] / m[0], r[1] / m[1])
            rz_new = _dot(r, z)
            v, rz = (z[0] + (rz_new / rz) * v[0], z[1] + (rz_new / rz) * v[1]), rz_new
        # r = -g - H·d, so dᵀHd = -d·(g + r) and the model's decrease is -(g·d + ½ dᵀHd) = ½ d·(r - g)
        gd, dr = _dot((gW, gb), d), _dot(d, r)
        return d, 0.5 * (dr - gd), hit


def _dot(a, b):
    return (a[0] * b[0]).sum() + (a[1] * b[1]).sum()


def _sum_zero(W, b):
    """Remove the mean over classes. Adding one vector to every class's weights (one constant to every bias)
    leaves the softmax unchanged: the data part of the Hessian is flat along it, only wd (nothing, for the bias)
    curves it, and the optimum has Σ_k W_k = 0 (the penalty's minimum along the flat direction). CG runs in the
    sum-zero subspace; without the projection the diagonal preconditioner leaks into the flat directions, whose
    curvature is wd alone, and CG crawls there at weak wd."""
    return W - W.mean(0, keepdim=True), b - b.mean()
