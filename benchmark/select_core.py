"""What `bench select` and `bench rank` share: the evidence of past records, the proxy with the best track record
on them, models ordered by a proxy, and budgets. One module both import, so neither imports the other."""
from __future__ import annotations

import re

import pandas as pd

from .errors import ConfigError


def parse_budget(text: str) -> float:
    """Seconds from '4h', '90m', '3600s' or a bare number of hours."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([hms]?)\s*", str(text))
    if not m:
        raise ConfigError(f"--budget '{text}': write a duration such as 4h, 90m or 3600s")
    return float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "": 3600}[m.group(2)]


def evidence(results, target: str, proxies=None):
    """(per model x dataset x protocol seed means of the primary metric, cost in seconds per cell, ProxyMeta).
    The means carry their dataset's noise ceiling (`ceiling_kendall`, `target_can_rank`: report/ceiling.py), as
    `bench report` computes it from the same records."""
    from .report.ceiling import ceiling_table
    from .report.cli import _proxy_meta, target_per_seed
    from .report.cost import load_costs, seconds
    from .report.load import load_records, seed_summary
    long, cells = load_records(results)
    if "layer" in long:  # per-layer records (issue 21): models are compared at their penultimate features
        long, cells = long[long.layer == "last"], cells[cells.layer == "last"]
    if cells.empty:
        raise ConfigError(f"{results}: no records found; run 'bench run' first or pass --results")
    primary = cells.groupby("protocol").primary.first().to_dict()
    summ = seed_summary(long)
    summ = summ[summ.protocol.map(primary) == summ.metric]
    if target not in set(summ.protocol):
        raise ConfigError(f"{results}: no ok records of the target '{target}'; pass --target with one of "
                          f"{sorted(summ.protocol.unique())}")
    if proxies:
        summ = summ[summ.protocol.isin(set(proxies) | {target})]
    costs = load_costs(results)
    costs["sec"] = seconds(costs)[0]
    cost = costs.groupby(["model", "dataset", "protocol"]).sec.median().rename("cost_s").reset_index()
    ceil = ceiling_table(target_per_seed(long, target, primary.get(target, "top1")))
    summ = summ.merge(ceil[["dataset", "ceiling_kendall", "target_can_rank"]], on="dataset", how="left")
    return summ[["model", "dataset", "protocol", "mean", "ceiling_kendall", "target_can_rank"]], cost, \
        _proxy_meta(cells)


def rankable(summ) -> pd.DataFrame:
    """The rows of datasets where the target can rank the models (or where that is unknown: one seed)."""
    if "target_can_rank" not in summ:
        return summ
    from .report.ceiling import cannot_rank
    return summ[~summ.target_can_rank.map(cannot_rank).astype(bool)]


def best_proxy(summ, meta, target: str, exclude: str | None = None) -> tuple[str | None, pd.Series]:
    """The proxy with the highest mean in-domain Kendall τ on the datasets other than `exclude`, leaving out those
    where the target's noise ceiling says it cannot rank the models (their τ is seed noise)."""
    from .report.tables import correlation_table
    s = rankable(summ[summ.dataset != exclude])
    tgt = s[s.protocol == target][["model", "dataset", "mean"]].rename(columns={"mean": "target"})
    sc = s[s.protocol != target].rename(columns={"protocol": "proxy", "mean": "score"})
    corr = correlation_table(sc, tgt, meta, target, n_boot=0)
    if corr.empty:
        return None, pd.Series(dtype=float)
    ranking = corr.groupby("proxy").kendall.mean().dropna().sort_values(ascending=False)
    return (ranking.index[0] if len(ranking) else None), ranking


def order_models(scores: pd.Series, higher_is_better: bool) -> list:
    """Models by the proxy, best first; ties broken by name so the order is reproducible."""
    df = scores.dropna().rename("s").reset_index()
    df["s"] = df.s * (1 if higher_is_better else -1)
    return list(df.sort_values(["s", df.columns[0]], ascending=[False, True]).iloc[:, 0])
