"""Rank and linear correlations with seeded bootstrap intervals, and model-selection scores.

Thin wrappers over scipy.stats: the conventions (tau-b, weightedtau's defaults with the score as the first
argument, as the transferability-estimation literature reports it) live here, in one place.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

STATISTICS = ("kendall", "weighted_tau", "spearman", "pearson")


def _logit_pct(v):
    p = np.clip(np.asarray(v, dtype=float) / 100.0, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def correlations(score, target, *, logit_score=False, logit_target=False) -> dict:
    """All four statistics of `score` (already oriented: higher = better) against `target`."""
    x, y = np.asarray(score, dtype=float), np.asarray(target, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {k: np.nan for k in STATISTICS}
    px = _logit_pct(x) if logit_score else x
    py = _logit_pct(y) if logit_target else y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "kendall": stats.kendalltau(x, y, variant="b").statistic,
            "weighted_tau": stats.weightedtau(x, y).statistic,
            "spearman": stats.spearmanr(x, y).statistic,
            "pearson": stats.pearsonr(px, py).statistic if len(x) > 2 else np.nan,
        }


def bootstrap_ci(score, target, *, n_boot=1000, seed=0, level=0.95, **kw) -> dict:
    """Percentile intervals from resampling models with replacement (degenerate resamples are skipped)."""
    x, y = np.asarray(score, dtype=float), np.asarray(target, dtype=float)
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in STATISTICS}
    if len(x) >= 3:
        for _ in range(n_boot):
            idx = rng.integers(0, len(x), len(x))
            for k, v in correlations(x[idx], y[idx], **kw).items():
                draws[k].append(v)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for k, vals in draws.items():
        vals = np.asarray(vals, dtype=float)
        vals = vals[np.isfinite(vals)]
        out[f"{k}_lo"], out[f"{k}_hi"] = (np.percentile(vals, [lo, hi]) if len(vals) else (np.nan, np.nan))
    return out


def selection(score, target) -> dict:
    """How good is the model the proxy would pick? (score oriented: higher = better)."""
    x, y = np.asarray(score, dtype=float), np.asarray(target, dtype=float)
    if len(x) == 0:
        return {"regret_top1": np.nan, "relative_top": np.nan, "best_in_top3": np.nan}
    pick = int(np.argmax(x))
    best = float(np.max(y))
    top3 = np.argsort(-x, kind="stable")[:3]
    return {"regret_top1": best - y[pick], "relative_top": y[pick] / best if best else np.nan,
            "best_in_top3": bool(np.any(y[top3] == best))}
