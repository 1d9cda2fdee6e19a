"""Models whose frozen features are (partly) dead, per dataset, from the `feature_health` that proxy records carry
(counts over the train split's cached features: all-zero and constant columns, all-zero rows)."""
from __future__ import annotations

import pandas as pd

from ..records import iter_records
from .tables import to_markdown

HEALTH_COLUMNS = ["dataset", "model", "n", "dim", "dead_columns", "constant_columns", "zero_rows", "verdict"]


def feature_health_table(root) -> pd.DataFrame:
    """One row per (dataset, model) with any dead or constant column or all-zero row (the largest counts over its
    records, ok or error: an error caused by dead features is where they matter most); `attrs['checked']`: how
    many (dataset, model) pairs have a record with `feature_health` at all."""
    rows = []
    for _, rec in iter_records(root):
        h = rec.get("feature_health")
        if isinstance(h, dict) and h.get("dim"):
            rows.append({"dataset": rec["dataset"], "model": rec["model"],
                         **{k: h.get(k, 0) for k in ("n", "dim", "dead_columns", "constant_columns", "zero_rows")}})
    if not rows:
        out = pd.DataFrame(columns=HEALTH_COLUMNS)
        out.attrs["checked"] = 0
        return out
    df = pd.DataFrame(rows).groupby(["dataset", "model"], as_index=False, sort=True).max()
    checked = len(df)
    df = df[(df.dead_columns > 0) | (df.constant_columns > 0) | (df.zero_rows > 0)].copy()
    df["verdict"] = [verdict(r) for r in df.to_dict("records")]
    out = df[HEALTH_COLUMNS].reset_index(drop=True)
    out.attrs["checked"] = checked
    return out


def verdict(r: dict) -> str:
    if r["dead_columns"] >= r["dim"]:
        return "all features dead (all zero)"
    if r["constant_columns"] >= r["dim"]:
        return "all features constant"
    if r["zero_rows"] >= r["n"] > 0:
        return "every image maps to zero"
    parts = []
    if r["dead_columns"]:
        parts.append(f"{r['dead_columns'] / r['dim']:.0%} of columns dead")
    if r["constant_columns"] > r["dead_columns"]:
        parts.append(f"{r['constant_columns'] - r['dead_columns']} more constant")
    if r["zero_rows"]:
        parts.append(f"{r['zero_rows']} image(s) with all-zero features")
    return ", ".join(parts)


def feature_health_section(root, out=None) -> list[str]:
    """Markdown lines for summary.md and the index; the table goes to <out>/feature_health.csv."""
    table = feature_health_table(root)
    if out is not None:
        table.to_csv(out / "feature_health.csv", index=False)
    lines = ["## Dead features", ""]
    if not table.attrs.get("checked"):
        return lines + ["Unknown: no record carries `feature_health` (no proxy cells, or records written before "
                        "feature extraction counted dead columns; `bench run --force` on a proxy recomputes it).", ""]
    if table.empty:
        return lines + [f"None of the {table.attrs['checked']} model × dataset pairs with proxy records has an "
                        f"all-zero or constant feature column or an all-zero feature row (counted on the train "
                        f"split's frozen features).", ""]
    return lines + ["Frozen features with all-zero (dead) or constant columns, or images whose features are all zero, "
                    "per dataset (`constant_columns` includes the dead ones). Proxies on features that died entirely "
                    "are errors, not scores; partly dead features rank as they are.", "", to_markdown(table), ""]
