"""Per-dataset correlation tables, model-selection scores and the across-dataset summary."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .stats import STATISTICS, bootstrap_ci, correlations, selection


@dataclass(frozen=True)
class ProxyMeta:
    higher_is_better: bool = True  # direction of the score
    percent: bool = False  # the score is an accuracy in % (logit-transformable)


def correlation_table(scores: pd.DataFrame, target: pd.DataFrame, meta: dict, target_name: str,
                      transform: str = "none", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """scores: model, dataset, proxy, score; target: model, dataset, target. One row per dataset x proxy."""
    rows = []
    for (dataset, proxy), grp in scores.groupby(["dataset", "proxy"], sort=True):
        tgt = target[target.dataset == dataset]
        both = grp.merge(tgt, on=["model", "dataset"]).dropna(subset=["score", "target"]).sort_values("model")
        missing = sorted(set(tgt.model) ^ set(grp.dropna(subset=["score"]).model))
        m = meta.get(proxy, ProxyMeta())
        # A lower-is-better percentage (an error rate, ECE in %) is oriented as 100 − v, not −v: the same ranks and
        # Pearson, and it stays in [0, 100] so that logit(v/100) applies (logit(1 − p) = −logit(p)).
        raw = both.score.to_numpy()
        oriented = raw if m.higher_is_better else (100.0 - raw if m.percent else -raw)
        acc = both.target.to_numpy()
        kw = dict(logit_score=transform == "logit" and m.percent, logit_target=transform == "logit")
        row = {"dataset": dataset, "proxy": proxy, "target": target_name, "n": len(both),
               "orientation": "as is" if m.higher_is_better else
               ("100 − v (lower is better)" if m.percent else "negated (lower is better)"),
               "logit_score": kw["logit_score"], "logit_target": kw["logit_target"],
               **correlations(oriented, acc, **kw), **bootstrap_ci(oriented, acc, n_boot=n_boot, seed=seed, **kw),
               **selection(oriented, acc), "missing_models": ";".join(missing)}
        if len(both):
            row["proxy_pick"] = both.model.iloc[int(np.argmax(oriented))]
            row["best_model"] = both.model.iloc[int(np.argmax(acc))]
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table(corr: pd.DataFrame, win_stat: str = "weighted_tau") -> pd.DataFrame:
    """Mean and spread of each statistic per proxy across datasets, and datasets won (ties share the win)."""
    if corr.empty:
        return pd.DataFrame()
    agg = {}
    for s in STATISTICS + ("regret_top1",):
        agg[f"{s}_mean"] = (s, "mean")
        agg[f"{s}_std"] = (s, "std")
    out = corr.groupby("proxy").agg(n_datasets=("dataset", "nunique"), **agg)
    best = corr.groupby("dataset")[win_stat].transform("max")
    wins = corr[np.isclose(corr[win_stat], best) & corr[win_stat].notna()].groupby("proxy").size()
    out["wins"] = wins.reindex(out.index).fillna(0).astype(int)
    return out.sort_values(f"{win_stat}_mean", ascending=False).reset_index()


def to_markdown(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """Markdown without the optional `tabulate` dependency."""
    if df.empty:
        return "_(empty)_\n"

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else format(v, floatfmt)
        return str(v)
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"
