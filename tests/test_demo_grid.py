"""The offline demo's own grid, demo-sized: its four packaged backbones on its three packaged datasets at the
demo's resolutions (the settings that once gave all-zero features and an `ok` record with cdnv = NaN), every
frozen-feature proxy of the demo and a one-epoch fine-tune; no record may hold a NaN/inf metric as `ok`, no cell
may fail, and no backbone's features may be dead. Caps are smaller than the demo's so it stays a test."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from benchmark.config import load_datasets, load_zoo
from benchmark.records import iter_records
from benchmark.runner import RunOptions, run_grid

ROOT = Path(__file__).resolve().parents[1]


def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, float):
        yield obj


def test_demo_grid_has_no_degenerate_ok_record(tmp_path, one_thread):
    zoo = load_zoo(ROOT / "examples/offline_zoo.yaml")
    dsets = load_datasets(ROOT / "examples/offline_datasets.yaml")
    dsets.datasets = [dataclasses.replace(d, max_train_per_class=min(d.max_train_per_class or 12, 12),
                                          max_test_per_class=min(d.max_test_per_class or 10, 10))
                      for d in dsets.datasets]
    dsets.protocols = {**dsets.protocols, "finetune": {**dsets.protocols["finetune"], "epochs": 1}}
    dsets.settings.protocol_seeds = {}
    protocols = [p for p in dsets.settings.protocols if p not in ("bn_tune", "linear_aug")]
    summary = run_grid(zoo, dsets, RunOptions(out=str(tmp_path / "r"), protocols=protocols), log=lambda *_: None)
    assert not summary.errors, summary.errors
    records = [rec for _, rec in iter_records(tmp_path / "r")]
    assert len(records) == len(zoo.models) * len(dsets.datasets) * len(protocols)
    for rec in records:
        where = f"{rec['dataset']}/{rec['model']}/{rec['protocol']}"
        assert rec["status"] == "ok", where
        assert all(math.isfinite(v) for v in _numbers(rec["metrics"])), (where, rec["metrics"])
        h = rec.get("feature_health")
        if h:  # ReLU6 backbones leave some channels off on digits and faces; dead features would be most of them
            assert h["dead_columns"] < h["dim"] // 4 and h["zero_rows"] == 0, (where, h)
