"""Significance between proxies: is proxy A's better τ more than noise?

Per dataset, a paired bootstrap over models (the same resamples for both proxies) gives Δτ and its interval;
across datasets, scipy's Wilcoxon signed-rank test on the per-dataset Δτ; over all proxies, a Friedman test and
a Nemenyi critical-difference diagram (Demšar 2006) from scikit-posthocs. Datasets where the target's noise
ceiling says it cannot rank the models (report/ceiling.py) keep their per-dataset rows but are left out of the
across-dataset tests: a difference of τ against seed noise is not evidence for either proxy.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from .tables import ProxyMeta

DELTAS = ("kendall", "weighted_tau")
PAIR_COLUMNS = ["proxy_a", "proxy_b", "n_datasets", "n_models_min", "mean_delta_kendall", "ci_low", "ci_high",
                "mean_delta_weighted_tau", "wt_ci_low", "wt_ci_high", "wilcoxon_stat", "wilcoxon_p", "wins_a",
                "wins_b", "excluded_datasets"]


def rankable(ceiling) -> dict:
    """dataset -> False where the ceiling table says the target cannot rank the models (True or unknown: kept)."""
    if ceiling is None or len(ceiling) == 0 or "target_can_rank" not in ceiling:
        return {}
    from .ceiling import cannot_rank
    return {d: not cannot_rank(v) for d, v in zip(ceiling.dataset, ceiling.target_can_rank)}


def _taus(x, y) -> tuple[float, float]:
    """Kendall τ-b and weighted τ with the conventions of stats.correlations (nan when degenerate)."""
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan, np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return stats.kendalltau(x, y, variant="b").statistic, stats.weightedtau(x, y).statistic


def resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] model indices; depends only on (n, n_boot, seed), so every proxy gets the same ones."""
    return np.random.default_rng(seed).integers(0, n, (n_boot, n)) if n >= 3 else np.zeros((0, n), dtype=int)


def bootstrap_taus(score, target, idx: np.ndarray) -> np.ndarray:
    """[n_boot, 2] (Kendall, weighted τ) on each resample."""
    x, y = np.asarray(score, dtype=float), np.asarray(target, dtype=float)
    return np.array([_taus(x[i], y[i]) for i in idx]).reshape(len(idx), 2)


def paired_bootstrap(score_a, score_b, target, *, n_boot=1000, seed=0, level=0.95) -> dict:
    """Δτ = τ(a) − τ(b) on one dataset, with a percentile interval from resampling models (paired)."""
    idx = resamples(len(target), n_boot, seed)
    y = np.asarray(target, dtype=float)
    ta = (_taus(np.asarray(score_a, float), y), bootstrap_taus(score_a, y, idx))
    tb = (_taus(np.asarray(score_b, float), y), bootstrap_taus(score_b, y, idx))
    return _delta(ta, tb, level)


def _delta(ta, tb, level=0.95) -> dict:
    """ta, tb: ((kendall, weighted τ) point estimates, [n_boot, 2] draws on shared resamples)."""
    da = ta[1] - tb[1]
    out = {}
    for j, s in enumerate(DELTAS):
        out[f"delta_{s}"] = ta[0][j] - tb[0][j]
        out[f"{s}_lo"], out[f"{s}_hi"] = _interval(da[:, j], level)
    out["draws"] = da
    return out


def _cached(cache, key, x, y, idx):
    if key not in cache:
        cache[key] = (_taus(np.asarray(x, float), y), bootstrap_taus(x, y, idx))
    return cache[key]


def _interval(v, level=0.95):
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return np.nan, np.nan
    return tuple(np.percentile(v, [100 * (1 - level) / 2, 100 * (1 + level) / 2]))


def wilcoxon_p(deltas) -> tuple[float, float]:
    """scipy.stats.wilcoxon with its defaults; nan where it is undefined (no datasets, all differences zero)."""
    d = np.asarray(deltas, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) == 0 or np.all(d == 0):
        return np.nan, np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = stats.wilcoxon(d)
    return float(r.statistic), float(r.pvalue)


def _oriented(scores, meta):
    """Scores with lower-is-better proxies negated (positive τ always means agreement)."""
    s = scores.copy()
    sign = s.proxy.map(lambda p: 1.0 if meta.get(p, ProxyMeta()).higher_is_better else -1.0)
    s["score"] = s.score * sign
    return s


def compare_proxies(scores, target, meta, *, n_boot=1000, seed=0, ceiling=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-dataset Δ for every proxy pair, across-dataset summary per pair). `ceiling`: the noise-ceiling table;
    its datasets where the target cannot rank are marked per dataset and left out of the across-dataset rows."""
    ok = rankable(ceiling)
    s = _oriented(scores.dropna(subset=["score"]), meta)
    proxies = sorted(s.proxy.unique())
    per, draws, cache = [], {}, {}
    for dataset, grp in s.groupby("dataset", sort=True):
        wide = grp.pivot_table(index="model", columns="proxy", values="score")
        tgt = target[target.dataset == dataset].set_index("model").target.dropna()
        for ia, a in enumerate(proxies):
            for b in proxies[ia + 1:]:
                if a not in wide or b not in wide:
                    continue
                both = pd.concat([wide[a], wide[b], tgt], axis=1, join="inner").dropna().sort_index()
                if len(both) < 2:
                    continue
                y, models = both.iloc[:, 2].to_numpy(), tuple(both.index)
                idx = resamples(len(both), n_boot, seed)  # same (n, seed): the same resamples for a and b
                ta, tb = (_cached(cache, (dataset, models, p), both[p].to_numpy(), y, idx) for p in (a, b))
                r = _delta(ta, tb)
                draws[(a, b, dataset)] = r.pop("draws")
                per.append({"proxy_a": a, "proxy_b": b, "dataset": dataset, "n_models": len(both), **r,
                            "target_can_rank": ok.get(dataset, True)})
    per = pd.DataFrame(per, columns=["proxy_a", "proxy_b", "dataset", "n_models", "delta_kendall", "kendall_lo",
                                     "kendall_hi", "delta_weighted_tau", "weighted_tau_lo", "weighted_tau_hi",
                                     "target_can_rank"])
    rows = []
    for (a, b), g_all in per.groupby(["proxy_a", "proxy_b"], sort=True):
        g = g_all[g_all.target_can_rank.astype(bool)]
        excluded = ";".join(sorted(g_all[~g_all.target_can_rank.astype(bool)].dataset))
        if g.empty:  # every shared dataset is one the target cannot rank: nothing to test
            rows.append({"proxy_a": a, "proxy_b": b, "n_datasets": 0, "n_models_min": int(g_all.n_models.min()),
                         "wins_a": 0, "wins_b": 0, "excluded_datasets": excluded})
            continue
        row = {"proxy_a": a, "proxy_b": b, "n_datasets": int(g.delta_kendall.notna().sum()),
               "n_models_min": int(g.n_models.min())}
        for j, (s_, lo, hi) in enumerate([("kendall", "ci_low", "ci_high"), ("weighted_tau", "wt_ci_low", "wt_ci_high")]):
            row[f"mean_delta_{s_}"] = g[f"delta_{s_}"].mean()
            # interval of the mean over datasets: average the datasets' paired draws resample by resample
            stack = [draws[(a, b, d)][:, j] for d in g.dataset if len(draws[(a, b, d)])]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                row[lo], row[hi] = _interval(np.nanmean(np.vstack(stack), axis=0)) if stack else (np.nan, np.nan)
        row["wilcoxon_stat"], row["wilcoxon_p"] = wilcoxon_p(g.delta_kendall)
        row["wins_a"], row["wins_b"] = int((g.delta_kendall > 0).sum()), int((g.delta_kendall < 0).sum())
        row["excluded_datasets"] = excluded
        rows.append(row)
    return per, pd.DataFrame(rows, columns=PAIR_COLUMNS)


def friedman(corr: pd.DataFrame, stat: str = "kendall") -> dict | None:
    """Friedman over proxies (groups) x datasets (blocks) on the per-dataset statistic, complete datasets only
    (and only those where the target can rank the models, when `corr` carries the ceiling's verdict), with
    Nemenyi p-values (scikit-posthocs) and the average ranks (1 = best) for the CD diagram."""
    if "target_can_rank" in corr:
        from .ceiling import cannot_rank
        corr = corr[~corr.target_can_rank.map(cannot_rank).astype(bool)]
    table = corr.pivot(index="dataset", columns="proxy", values=stat).dropna()
    if table.shape[1] < 3 or table.shape[0] < 2:
        return None
    import scikit_posthocs as sp
    chi2, p = stats.friedmanchisquare(*[table[c].to_numpy() for c in table.columns])
    ranks = table.rank(axis=1, ascending=False).mean().sort_values()
    k, n = table.shape[1], table.shape[0]
    # Nemenyi critical difference (Demšar 2006, eq. 5): q_alpha = studentized range / sqrt(2)
    q = stats.studentized_range.ppf(0.95, k, np.inf) / np.sqrt(2)
    return {"statistic": float(chi2), "pvalue": float(p), "n_datasets": n, "n_proxies": k, "ranks": ranks,
            "nemenyi": sp.posthoc_nemenyi_friedman(table.to_numpy()).set_axis(table.columns, axis=0)
            .set_axis(table.columns, axis=1), "cd": float(q * np.sqrt(k * (k + 1) / (6 * n))), "table": table}


def cd_diagram(fr: dict, path, stat: str = "kendall") -> None:
    import matplotlib.pyplot as plt
    import scikit_posthocs as sp
    k = fr["n_proxies"]
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.4 * k))
    sp.critical_difference_diagram(fr["ranks"], fr["nemenyi"], ax=ax, label_props={"fontsize": 10})
    ax.set_title(f"Average rank by per-dataset {stat.replace('_', ' ')} (1 = best) over {fr['n_datasets']} datasets\n"
                 f"bars join proxies Nemenyi cannot separate (α = 0.05, CD = {fr['cd']:.2f}); "
                 f"Friedman χ² = {fr['statistic']:.2f}, p = {fr['pvalue']:.2g}", fontsize=9, pad=16)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def verdict_words(pairs: pd.DataFrame, fr: dict | None, alpha: float = 0.05) -> list[str]:
    """Plain sentences: who beats whom, and where the evidence cannot decide."""
    lines = []
    if pairs.empty:
        return ["Fewer than two proxies share datasets: nothing to compare."]
    for r in pairs.itertuples():
        if r.n_datasets == 0:
            lines.append(f"- {r.proxy_a} vs {r.proxy_b}: not tested — on every dataset they share, the target "
                         f"cannot rank the models ({str(r.excluded_datasets).replace(';', ', ')}).")
            continue
        ci = f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]" if np.isfinite(r.ci_low) else "(no interval)"
        if np.isfinite(r.wilcoxon_p) and r.wilcoxon_p < alpha:
            a_wins = r.mean_delta_kendall > 0
            win, lose = (r.proxy_a, r.proxy_b) if a_wins else (r.proxy_b, r.proxy_a)
            if not a_wins and np.isfinite(r.ci_low):  # the interval of Δ = winner − loser
                ci = f"[{-r.ci_high:+.2f}, {-r.ci_low:+.2f}]"
            caveat = (" The bootstrap interval over models still includes 0: consistent across datasets, but "
                      "within one dataset's model sample the difference is not resolved."
                      if np.isfinite(r.ci_low) and r.ci_low <= 0 <= r.ci_high else "")
            lines.append(f"- **{win} beats {lose}**: mean Δτ = {abs(r.mean_delta_kendall):.2f} {ci} over "
                         f"{r.n_datasets} datasets, Wilcoxon p = {r.wilcoxon_p:.3g}.{caveat}")
        else:
            p = f"p = {r.wilcoxon_p:.2g}" if np.isfinite(r.wilcoxon_p) else "p undefined"
            lines.append(f"- {r.proxy_a} vs {r.proxy_b}: no significant difference (mean Δτ = "
                         f"{r.mean_delta_kendall:+.2f} {ci}, {p}, wins {r.wins_a}–{r.wins_b}).")
    excluded = sorted({d for e in pairs.excluded_datasets.dropna() for d in str(e).split(";") if d}) \
        if "excluded_datasets" in pairs else []
    if excluded:
        lines.append(f"- Left out of these tests: {', '.join(excluded)} — the target's noise ceiling says it cannot "
                     f"rank the models there (see the noise ceiling section).")
    nd = int(pairs.n_datasets.max())
    if nd < 6:
        lines.append(f"- Evidence is thin: with {nd} dataset(s) the smallest two-sided Wilcoxon p is "
                     f"2/2^{nd} = {2 / 2 ** nd:.3g}, so no pair can reach p < {alpha}; at least 6 datasets are needed.")
    nm = int(pairs.n_models_min.min())
    if nm < 10:
        lines.append(f"- Per-dataset τ rests on as few as {nm} models: the bootstrap intervals over models are wide.")
    if fr is not None:
        ranks = ", ".join(f"{p} {r:.2f}" for p, r in fr["ranks"].items())
        lines.append(f"- Friedman over {fr['n_proxies']} proxies × {fr['n_datasets']} datasets: χ² = "
                     f"{fr['statistic']:.2f}, p = {fr['pvalue']:.3g}; average ranks {ranks}; Nemenyi CD = "
                     f"{fr['cd']:.2f}.")
    return lines
