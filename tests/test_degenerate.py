"""No degenerate `ok`: dead features planted in the feature cache end in error records that say why, the
runner's net turns any NaN/inf metric into an error, feature health is recorded (from cached features too) and
reported, and no ok record of a small real grid holds a non-finite metric."""
import json
import math
from pathlib import Path

import pytest
import torch

from benchmark.cli import main
from benchmark.config import load_datasets, load_zoo
from benchmark.features import FeatureCache, feature_health
from benchmark.finite import check_finite, non_finite
from benchmark.runner import Cell, GroupContext, RunOptions, RunSummary, run_grid

ZOO = """\
models:
  - name: r18_random
    timm: resnet18
    pretrained: false
  - name: dead
    timm: resnet18
    pretrained: false
"""
DATA = """\
settings:
  protocols: [cdnv, nc1, knn, hscore]
  batch_size: 64
protocols:
  linear: {n_wd: 3}
datasets:
  - name: digits
    packaged: digits
    resolution: 32
    max_train_per_class: 12
    max_test_per_class: 6
"""


def _grid(tmp_path, zoo=ZOO, data=DATA):
    (tmp_path / "zoo.yaml").write_text(zoo)
    (tmp_path / "d.yaml").write_text(data)
    return load_zoo(tmp_path / "zoo.yaml"), load_datasets(tmp_path / "d.yaml")


def _plant_dead(zoo, dsets, out, model="dead", dim=512):
    """All-zero features for every split of `model`, written where the runner looks for cached features: the
    model is never run, exactly as on a rerun over a cache made when its features died."""
    entry = next(m for m in zoo.models if m.name == model)
    data = dsets.datasets[0]
    cache = FeatureCache(Path(out) / ".cache")
    ctx = GroupContext(entry, data, dsets, RunOptions(out=str(out)), cache, RunSummary(), {})
    for split in ("train", "val", "test"):
        src, plan = ctx.source()
        official, idx = plan[split]
        labels = torch.as_tensor(src.splits[official].labels[idx], dtype=torch.long)
        cache.save(ctx.feature_key(data, split), torch.zeros(len(idx), dim), labels, {"seconds": 0.0},
                   source_probs=None,  # as for a model without a classifier: LEEP/NCE are not applicable
                   model_info={"model_identity": {"planted": True}, "model_notes": []})  # as a run stores it


def _records(out):
    return {(r["model"], r["protocol"]): r for r in map(lambda p: json.loads(p.read_text()),
                                                        Path(out).rglob("*__seed*.json"))}


def test_feature_health_counts_planted_structure():
    x = torch.randn(10, 6)
    x[:, 1] = 0  # dead
    x[:, 4] = 3.0  # constant, not dead
    assert feature_health(x) == {"dead_columns": 1, "constant_columns": 2, "zero_rows": 0, "dim": 6, "n": 10}
    x[7] = 0  # an all-zero row (column 4 is no longer constant)
    assert feature_health(x) == {"dead_columns": 1, "constant_columns": 1, "zero_rows": 1, "dim": 6, "n": 10}


def test_dead_features_give_error_records_that_say_why_and_the_report_lists_the_model(tmp_path):
    zoo, dsets = _grid(tmp_path)
    out = tmp_path / "r"
    _plant_dead(zoo, dsets, out)
    s = run_grid(zoo, dsets, RunOptions(out=str(out), models=["dead"]), log=lambda *_: None)
    assert s.models_loaded == 0 and s.features_computed == 0  # everything came from the planted cache
    recs = _records(out)
    cdnv = recs[("dead", "cdnv")]
    assert cdnv["status"] == "error" and "metrics" not in cdnv
    assert cdnv["error"] == ("cdnv: classes 0 and 1 have identical means (all-zero features): the backbone's "
                             "features died at this resolution (see feature_health in the record)")
    assert recs[("dead", "nc1")]["status"] == "error" and "Σ_B = 0" in recs[("dead", "nc1")]["error"]
    health = {"dead_columns": 512, "constant_columns": 512, "zero_rows": 100, "dim": 512, "n": 100}
    assert cdnv["feature_health"] == health
    # defined on dead features, as their docstrings say: ok at the bottom of their range, health recorded
    knn, hs = recs[("dead", "knn")], recs[("dead", "hscore")]
    assert knn["status"] == "ok" and knn["metrics"]["top1"] == pytest.approx(10.0)  # chance on 10 classes
    assert hs["status"] == "ok" and hs["metrics"]["hscore"] == 0 and hs["feature_health"] == health
    run_grid(zoo, dsets, RunOptions(out=str(out), models=["r18_random"], protocols=["knn"]), log=lambda *_: None)
    assert main(["report", "--results", str(out), "--out", str(tmp_path / "o"), "--target", "knn",
                 "--bootstrap", "0", "--no-figures"]) == 0
    index = (tmp_path / "o" / "README.md").read_text()
    dead = index.split("## Dead features")[1].split("\n## ")[0]
    assert "| digits | dead | 100 | 512 | 512 | 512 | 100 | all features dead (all zero) |" in dead
    # a random-init ResNet-18 at 32 px has a 1 x 1 last map: ReLU leaves part of its columns dead, and it says so
    partial = [line for line in dead.splitlines() if "| r18_random |" in line]
    assert len(partial) == 1 and "% of columns dead |" in partial[0] and "all features" not in partial[0]
    assert "## Dead features" in (tmp_path / "o" / "summary.md").read_text()


def test_the_net_turns_a_nan_metric_into_an_error_naming_it(tmp_path, monkeypatch):
    from benchmark.proxies import PROXIES
    from benchmark.proxies.base import Proxy
    knn = PROXIES.get("knn")

    def nan_knn(*a, **kw):
        return {**knn.fn(*a, **kw), "mean_per_class": float("nan")}
    monkeypatch.setitem(PROXIES._items, "knn", Proxy(**{**knn.__dict__, "fn": nan_knn}))
    zoo, dsets = _grid(tmp_path)
    out = tmp_path / "r"
    _plant_dead(zoo, dsets, out)
    run_grid(zoo, dsets, RunOptions(out=str(out), models=["dead"], protocols=["knn"]), log=lambda *_: None)
    rec = _records(out)[("dead", "knn")]
    assert rec["status"] == "error" and rec["error"].startswith("knn: mean_per_class = nan is not a finite number")
    assert "512/512 all-zero" in rec["error"]
    assert non_finite({"a": 1.0, "b": [1.0, float("inf")], "c": True, "d": "x"}) == ["b = inf"]
    with pytest.raises(Exception, match="x = -inf"):
        check_finite(Cell("m", "d", "x", 0), {"x": float("-inf")}, None)


def test_no_ok_record_of_a_small_grid_holds_a_non_finite_metric(tmp_path):
    """A real (random-init) model and a planted dead one under every cheap frozen proxy: each ok record's numbers
    are finite (a NaN would be stored as null), and every record of the dead model is an error or defined."""
    from benchmark.proxies import PROXIES
    protos = [p for p in PROXIES.names() if p not in ("nleep", "linear")]  # the two slow ones
    zoo, dsets = _grid(tmp_path, data=DATA.replace("[cdnv, nc1, knn, hscore]", f"[{', '.join(protos)}]"))
    out = tmp_path / "r"
    _plant_dead(zoo, dsets, out)
    run_grid(zoo, dsets, RunOptions(out=str(out)), log=lambda *_: None)
    recs = _records(out)
    assert len(recs) == 2 * len(protos)

    def numbers(v):
        return v if isinstance(v, list) else [v]
    for (model, proto), r in recs.items():
        if r["status"] != "ok":
            continue
        for k, v in r["metrics"].items():
            for x in numbers(v):
                assert x is not None and not isinstance(x, str), (model, proto, k, x)
                assert isinstance(x, bool) or math.isfinite(x), (model, proto, k, x)
    # the random ResNet-18 maps whole digit classes to one constant vector at 32 px: where a proxy is undefined
    # on that, its error says so in its own words (never a bare exception or a NaN)
    real = [r for (m, _), r in recs.items() if m == "r18_random"]
    assert sum(r["status"] == "ok" for r in real) >= len(protos) - 4
    for r in real:
        assert r["status"] != "error" or r["error"].startswith(f"{r['protocol']}: "), r["error"]
    errors = {p for (m, p), r in recs.items() if m == "dead" and r["status"] == "error"}
    assert {"cdnv", "nc1", "logme", "ncti", "sfda", "transrate", "parc", "numerical_rank"} <= errors


def test_an_old_ok_record_with_a_null_metric_is_recomputed(tmp_path):
    from benchmark.records import is_done, write_record
    p = tmp_path / "d" / "m" / "cdnv__seed0.json"
    write_record(p, {"model": "m", "dataset": "d", "protocol": "cdnv", "seed": 0, "status": "ok",
                     "config_hash": "h", "metrics": {"cdnv": float("nan")}})
    assert json.loads(p.read_text())["metrics"] == {"cdnv": None} and not is_done(p, "h")
    write_record(p, {"model": "m", "dataset": "d", "protocol": "cdnv", "seed": 0, "status": "ok",
                     "config_hash": "h", "metrics": {"cdnv": 0.5}})
    assert is_done(p, "h") and not is_done(p, "other")
