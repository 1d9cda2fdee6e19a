"""Records -> tidy DataFrames. The report reads records only; nothing here recomputes a metric."""
from __future__ import annotations

import pandas as pd

from ..records import iter_records

ID = ["model", "dataset", "protocol", "seed"]
LAST = "last"  # the pooled penultimate features: every record made before layers existed


def load_records(root) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(long table of metrics of ok records, table of every cell with its status — ok, error or corrupt — and
    error message)."""
    rows, cells, corrupt = [], [], []
    for path, rec in iter_records(root, corrupt):
        base = {**{k: rec.get(k) for k in ID}, "layer": rec.get("layer") or LAST}
        cells.append({**base, "status": rec["status"], "error": rec.get("error") or rec.get("reason", ""),
                      "primary": rec.get("primary", "top1"), "higher_is_better": rec.get("higher_is_better", True),
                      "device": (rec.get("provenance") or {}).get("device"),
                      "torch": (rec.get("provenance") or {}).get("torch"),
                      "timm": (rec.get("provenance") or {}).get("timm"),
                      "bench": (rec.get("provenance") or {}).get("bench_version"),
                      "wall_time_s": (rec.get("provenance") or {}).get("wall_time_s"), "path": str(path),
                      "warnings": "; ".join(rec.get("warnings") or [])})
        if rec["status"] != "ok":
            continue
        for metric, value in (rec.get("metrics") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append({**base, "layer_index": rec.get("layer_index"), "metric": metric, "value": float(value)})
    for path, cell, reason in corrupt:  # named as corrupt, never silently "absent"
        cells.append({"layer": LAST, **cell, "status": "corrupt", "primary": "top1", "higher_is_better": True, "path": str(path),
                      "error": f"corrupt record ({reason}): {path}; 'bench run' recomputes it"})
    long = pd.DataFrame(rows, columns=ID + ["layer", "layer_index", "metric", "value"])
    cells = pd.DataFrame(cells, columns=ID + ["layer", "status", "error", "primary", "higher_is_better", "device", "torch",
                                              "timm", "bench", "wall_time_s", "path", "warnings"])
    return long, cells


def last_layer(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the pooled penultimate features ('last'): what model-ranking tables compare across models."""
    return df[df.layer == LAST] if "layer" in df else df


def seed_summary(long: pd.DataFrame) -> pd.DataFrame:
    """One row per model x dataset x protocol x [layer x] metric: mean over seeds, with std and count kept. The
    layer is a key when the table has one, so the layers of a model are never averaged together."""
    keys = ["model", "dataset", "protocol"] + (["layer"] if "layer" in long else []) + ["metric"]
    if long.empty:  # only error records: keep the columns so callers can report what is missing
        return pd.DataFrame(columns=keys + ["mean", "std", "n_seeds"])
    return long.groupby(keys, sort=True)["value"].agg(mean="mean", std="std", n_seeds="count").reset_index()
