"""How well each frozen-feature proxy's best layer predicts the best block to tune with Layer-FT / SCL-FT.

The neural-collapse paper tunes one block and conjectures that the layer-wise NC1 of the pretrained network tells
which. Here the ground truth is a Layer-FT / SCL-FT cell that swept `block` (e.g. `layer_ft: {block: [2, 4, 6,
8]}`): its record keeps every sweep point's validation top-1 with the block it tuned, and `training.block_layers`,
the layer names whose output each block's output is (ResNet: 'layer3.1' and 'layer3'; ViT: 'blocks.7'). A proxy's
pick is its best layer over the per-layer records (layers_best.csv); it maps to the block whose output that layer
is ('last', the pooled penultimate features, to the last block; a stem layer to none). Reported per (dataset,
model, protocol, proxy): the picked block, the best block by validation top-1 (mean over seeds), and the points
lost by tuning the pick instead (`regret`; only when the pick was among the swept blocks); `hit`: the pick is as
good as the best swept block (ties count).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..layers import LAST
from ..records import iter_records

PROTOCOLS = ("layer_ft", "scl_ft")
COLUMNS = ["dataset", "model", "protocol", "proxy", "proxy_layer", "proxy_block", "best_block", "blocks_swept",
           "val_at_best", "val_at_pick", "regret", "hit"]


def block_sweeps(root) -> tuple[pd.DataFrame, dict]:
    """(one row per dataset, model, protocol, seed, block: the best validation top-1 over that block's sweep
    points; {(dataset, model): block_layers}) from the ok Layer-FT / SCL-FT records under `root`."""
    rows, layers = [], {}
    for _, rec in iter_records(root):
        training = rec.get("training") or {}
        if rec.get("protocol") not in PROTOCOLS or rec.get("status") != "ok" or not training.get("block_layers"):
            continue
        layers[rec["dataset"], rec["model"]] = training["block_layers"]
        per_block = {}
        for point in training.get("sweep") or []:
            block, val = (point.get("hp") or {}).get("block"), point.get("val_top1")
            if block is None or val is None or not np.isfinite(val):
                continue
            per_block[int(block)] = max(val, per_block.get(int(block), -np.inf))
        rows += [{"dataset": rec["dataset"], "model": rec["model"], "protocol": rec["protocol"],
                  "seed": rec.get("seed", 0), "block": b, "val_top1": v} for b, v in per_block.items()]
    return pd.DataFrame(rows, columns=["dataset", "model", "protocol", "seed", "block", "val_top1"]), layers


def layer_to_block(layer: str, block_layers: list) -> int | None:
    """The 1-based block whose output `layer` is; 'last' -> the last block; None for layers no block ends."""
    if layer == LAST:
        return len(block_layers)
    return next((k for k, names in enumerate(block_layers, start=1) if layer in names), None)


def block_choice_table(best: pd.DataFrame, sweeps: pd.DataFrame, layers: dict) -> pd.DataFrame:
    """Per (dataset, model, protocol, proxy) with a block sweep of >= 2 blocks and the proxy's best layer
    (`best`: layers_best.csv's rows): the pick mapped to a block against the best block (validation top-1, mean
    over seeds; ties: the shallower block)."""
    rows = []
    if "n_layers" in best:  # proxies scored on one layer only (training protocols at 'last') choose nothing
        best = best[best.n_layers >= 2]
    if sweeps.empty or best.empty:
        return pd.DataFrame(columns=COLUMNS)
    for (dataset, model, protocol), g in sweeps.groupby(["dataset", "model", "protocol"], sort=True):
        per_block = g.groupby("block").val_top1.mean().sort_index()
        if len(per_block) < 2:
            continue
        top = per_block.max()
        best_block = int(per_block.index[per_block >= top][0])
        for r in best[(best.dataset == dataset) & (best.model == model)].itertuples():
            pick = layer_to_block(r.best_layer, layers[dataset, model])
            at = per_block.get(pick, np.nan) if pick is not None else np.nan
            rows.append({"dataset": dataset, "model": model, "protocol": protocol, "proxy": r.proxy,
                         "proxy_layer": r.best_layer, "proxy_block": pick, "best_block": best_block,
                         "blocks_swept": len(per_block), "val_at_best": float(top), "val_at_pick": float(at),
                         "regret": float(top - at) if np.isfinite(at) else np.nan,
                         "hit": bool(np.isfinite(at) and at >= top)})  # tied with the best block counts
    return pd.DataFrame(rows, columns=COLUMNS)


def block_choice_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (protocol, proxy): how many (dataset, model) pairs, how often the pick is the best block, and the mean
    validation points lost where the pick was swept."""
    if table.empty:
        return pd.DataFrame(columns=["protocol", "proxy", "pairs", "hits", "mean_regret", "pairs_with_regret"])
    return (table.groupby(["protocol", "proxy"], sort=True)
            .agg(pairs=("hit", "size"), hits=("hit", "sum"), mean_regret=("regret", "mean"),
                 pairs_with_regret=("regret", "count")).reset_index())
