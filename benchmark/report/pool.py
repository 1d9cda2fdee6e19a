"""Pool-relative proxies (NCTI, ETran): their records hold per-model components; the score of a model is
defined only against the other models of the same dataset, so it is computed here, per dataset."""
from __future__ import annotations

import pandas as pd


def add_pool_scores(summary: pd.DataFrame) -> pd.DataFrame:
    """Append, for every proxy with a `combine`, one row per (model, dataset) under the proxy's primary key:
    the combination of the seed-mean components across the models of that dataset with all components."""
    from ..proxies import PROXIES
    rows = []
    for proto in summary.protocol.unique() if len(summary) else []:
        meta = PROXIES.get(proto) if proto in PROXIES else None
        if meta is None or meta.combine is None:
            continue
        part = summary[(summary.protocol == proto) & (summary.metric != meta.primary)]
        keys = ["dataset", "layer"] if "layer" in part else ["dataset"]  # a layer is pooled with the same layer
        for key, grp in part.groupby(keys):
            where = dict(zip(keys, key))
            wide = grp.pivot_table(index="model", columns="metric", values="mean").dropna()
            seeds = grp.groupby("model").n_seeds.min()
            if wide.empty:
                continue
            scores = meta.combine(wide.to_dict("records"))
            rows += [{"model": m, **where, "protocol": proto, "metric": meta.primary, "mean": s,
                      "std": float("nan"), "n_seeds": int(seeds[m])} for m, s in zip(wide.index, scores)]
    if not rows:
        return summary
    return pd.concat([summary, pd.DataFrame(rows)], ignore_index=True)
