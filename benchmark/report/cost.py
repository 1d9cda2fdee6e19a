"""Quality per unit of compute: each proxy's mean τ and top-1 regret against its median cost per cell.

Records carry `cost = {wall_s, device_s, images}`; older records only `provenance.wall_time_s`, read as wall
time with device time and images unknown. The cost basis is device-seconds where every cell has them, else
wall-seconds, and the report says which.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..records import iter_records

COST_COLUMNS = ["model", "dataset", "protocol", "seed", "wall_s", "device_s", "standalone_s", "images", "cost_source"]


def _num(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan


def cell_cost(rec: dict) -> dict:
    cost = rec.get("cost") or {}
    if cost:
        return {"wall_s": _num(cost.get("wall_s")), "device_s": _num(cost.get("device_s")),
                "standalone_s": _num(cost.get("standalone_s")), "images": _num(cost.get("images")),
                "cost_source": "cost"}
    return {"wall_s": _num((rec.get("provenance") or {}).get("wall_time_s")), "device_s": np.nan,
            "standalone_s": np.nan, "images": np.nan, "cost_source": "provenance"}


def load_costs(root) -> pd.DataFrame:
    """One row per ok record with its cost."""
    rows = [{**{k: rec.get(k) for k in ("model", "dataset", "protocol", "seed")}, **cell_cost(rec)}
            for _, rec in iter_records(root) if rec.get("status") == "ok"]
    return pd.DataFrame(rows, columns=COST_COLUMNS)


def seconds(costs: pd.DataFrame) -> tuple[pd.Series, str]:
    """Per-cell cost in seconds and its basis. Preferred: each cell's standalone cost (its own work plus the
    extraction of the features it read), since which cell of a group happens to extract the shared features
    depends on the order of protocols; then device-seconds, then wall-seconds, as far as every cell has them."""
    if len(costs) and "standalone_s" in costs and costs.standalone_s.notna().all():
        return costs.standalone_s, "device-seconds per cell alone, feature extraction included"
    if len(costs) and costs.device_s.notna().all():
        return costs.device_s, "device-seconds"
    return costs.wall_s, "wall-seconds"


def pareto(cost, quality, higher_is_better=True) -> np.ndarray:
    """Points no other point beats on both axes (cheaper-or-equal and better-or-equal, one strictly)."""
    c = np.asarray(cost, dtype=float)
    q = np.round(np.asarray(quality, dtype=float) * (1 if higher_is_better else -1), 12)  # float noise is not a win
    keep = np.isfinite(c) & np.isfinite(q)
    out = np.zeros(len(c), dtype=bool)
    for i in np.flatnonzero(keep):
        dominated = keep & (c <= c[i]) & (q >= q[i]) & ((c < c[i]) | (q > q[i]))
        out[i] = not dominated.any()
    return out


def cost_table(costs: pd.DataFrame, summ: pd.DataFrame, target_name: str) -> tuple[pd.DataFrame, str]:
    """Per proxy (and the target): median cost per cell, mean τ, mean regret, cost ratio, Pareto flags."""
    if costs.empty:
        return pd.DataFrame(), "wall-seconds"
    sec, basis = seconds(costs)
    med = costs.assign(sec=sec).groupby("protocol").agg(median_cost_s=("sec", "median"), cells=("sec", "size"),
                                                        median_images=("images", "median"))
    cols = ["kendall_mean", "regret_top1_mean"]
    q = summ.set_index("proxy")[cols] if not summ.empty else pd.DataFrame(columns=cols, dtype=float)
    table = med.join(q, how="inner")
    if target_name in med.index:  # the target against itself: τ = 1, regret 0 by definition
        table.loc[target_name] = [med.loc[target_name, "median_cost_s"], med.loc[target_name, "cells"],
                                  med.loc[target_name, "median_images"], 1.0, 0.0]
        table["cost_ratio_to_target"] = table.median_cost_s / med.loc[target_name, "median_cost_s"]
    else:
        table["cost_ratio_to_target"] = np.nan
    table["pareto_tau"] = pareto(table.median_cost_s, table.kendall_mean)
    table["pareto_regret"] = pareto(table.median_cost_s, table.regret_top1_mean, higher_is_better=False)
    return table.sort_values("median_cost_s").rename_axis("proxy").reset_index(), basis


def cost_words(table: pd.DataFrame, target_name: str, basis: str) -> list[str]:
    if table.empty or target_name not in set(table.proxy):
        return [f"No cost comparison: no ok records of the target `{target_name}`."]
    lines = []
    for r in table[table.proxy != target_name].itertuples():
        ratio = r.cost_ratio_to_target
        frac = f"1/{1 / ratio:.0f}" if 0 < ratio < 1 else f"{ratio:.1f}×"
        lines.append(f"- `{r.proxy}`: mean τ {r.kendall_mean:.2f} against `{target_name}` (which is 1 by definition)"
                     f" and top-1 regret {r.regret_top1_mean:.2f} points, at {frac} of its median cost per cell"
                     f" ({r.median_cost_s:.3g} vs {table.set_index('proxy').median_cost_s[target_name]:.3g} "
                     f"{basis}){' — on the Pareto front' if r.pareto_tau else ''}.")
    return lines


def cost_plot(table: pd.DataFrame, target_name: str, basis: str, path) -> None:
    """Two panels (mean τ, mean regret) against median cost per cell on a log axis; one shared x label with the
    cost basis on its own line, labels placed without overlaps (labels.place_labels)."""
    import matplotlib.pyplot as plt

    from .labels import place_labels
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6), layout="constrained")
    for ax, col, front, label in [(axes[0], "kendall_mean", "pareto_tau", "mean Kendall τ with the target ↑"),
                                  (axes[1], "regret_top1_mean", "pareto_regret", "mean top-1 regret (points) ↓")]:
        t = table.dropna(subset=["median_cost_s", col])
        t = t[t.median_cost_s > 0]
        ax.scatter(t.median_cost_s, t[col], s=40, color="tab:blue", edgecolor="black", zorder=3)
        f = t[t[front]].sort_values("median_cost_s")
        ax.step(f.median_cost_s, f[col], where="post", color="tab:red", lw=1.5, label="Pareto front", zorder=2)
        ax.set_xscale("log")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=9, loc="lower left" if col == "kendall_mean" else "upper right")
        ax.margins(x=0.35, y=0.18)  # room for the labels of the outermost points
        ax.set_title("higher is better" if col == "kendall_mean" else "lower is better", fontsize=9)
    fig.supxlabel(f"median cost per cell, log scale\n({basis})", fontsize=10)
    fig.suptitle("Quality per unit of compute", fontsize=11)
    for ax, col in zip(axes, ("kendall_mean", "regret_top1_mean")):
        t = table.dropna(subset=["median_cost_s", col])
        t = t[t.median_cost_s > 0]
        place_labels(ax, list(t.median_cost_s), list(t[col]),
                     [p + (" (target)" if p == target_name else "") for p in t.proxy])
    fig.savefig(path, dpi=120)
    plt.close(fig)
