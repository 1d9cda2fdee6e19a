import json

import pytest

from benchmark.cli import main
from benchmark.config import load_datasets, load_zoo
from benchmark.runner import RunOptions, plan_cells, run_grid

ZOO = """\
models:
  - name: mnv2
    package: mobilenetv2_100
  - name: r18_random
    timm: resnet18
    pretrained: false
"""
DATA = """\
settings:
  protocols: [linear, knn, nc1]
  batch_size: 64
  target: linear
protocols:
  linear: {n_wd: 5}
datasets:
  - name: textures
    packaged: textures
    resolution: 32
  - name: digits
    packaged: digits
    resolution: 32
    max_train_per_class: 12
    max_test_per_class: 6
"""


@pytest.fixture
def grid(tmp_path):
    (tmp_path / "zoo.yaml").write_text(ZOO)
    (tmp_path / "d.yaml").write_text(DATA)
    return load_zoo(tmp_path / "zoo.yaml"), load_datasets(tmp_path / "d.yaml"), tmp_path


def test_second_run_computes_nothing_and_forced_run_reuses_features(grid):
    zoo, dsets, tmp = grid
    opts = RunOptions(out=str(tmp / "r"))
    first = run_grid(zoo, dsets, opts, log=lambda *_: None)
    assert first.ok == 12 and not first.errors and first.features_computed == 2 * 2 * 3
    second = run_grid(zoo, dsets, opts, log=lambda *_: None)
    assert (second.ok, second.skipped, second.models_loaded, second.features_computed) == (0, 12, 0, 0)
    forced = run_grid(zoo, dsets, RunOptions(out=str(tmp / "r"), force=True), log=lambda *_: None)
    assert forced.ok == 12 and forced.features_computed == 0 and forced.models_loaded == 0

    rec = json.loads((tmp / "r" / "digits" / "mnv2" / "linear__seed0.json").read_text())
    assert rec["status"] == "ok" and rec["config_hash"] and rec["config"]["hp"] == {"n_wd": 5}
    assert rec["hyperparameters"]["n_wd"] == 5 and "wd" in rec["hyperparameters"]
    assert {"torch", "timm", "bench_version", "device", "wall_time_s", "timestamp"} <= set(rec["provenance"])
    assert rec["n"] == {"train": 100, "val": 20, "test": 60} and rec["feature_dim"] == 1280


def test_changed_hyperparameters_invalidate_only_that_protocol(grid):
    zoo, dsets, tmp = grid
    run_grid(zoo, dsets, RunOptions(out=str(tmp / "r")), log=lambda *_: None)
    dsets.protocols["knn"] = {"k": 5}
    again = run_grid(zoo, dsets, RunOptions(out=str(tmp / "r")), log=lambda *_: None)
    assert again.ok == 4 and again.skipped == 8


def test_failing_cell_becomes_error_record_and_grid_goes_on(grid, capsys):
    zoo, dsets, tmp = grid
    (tmp / "d.yaml").write_text(DATA.replace("    max_test_per_class: 6\n", "    max_test_per_class: 6\n    shots: 50\n"))
    rc = main(["run", "--zoo", str(tmp / "zoo.yaml"), "--datasets", str(tmp / "d.yaml"), "--out", str(tmp / "r")])
    assert rc == 1
    err = json.loads((tmp / "r" / "digits" / "mnv2" / "knn__seed0.json").read_text())
    assert err["status"] == "error" and "fewer than shots=50" in err["error"]
    ok = json.loads((tmp / "r" / "textures" / "mnv2" / "knn__seed0.json").read_text())
    assert ok["status"] == "ok"
    # errors are retried, ok cells are not
    (tmp / "d.yaml").write_text(DATA.replace("    max_test_per_class: 6\n", "    max_test_per_class: 6\n    shots: 4\n"))
    assert main(["run", "--zoo", str(tmp / "zoo.yaml"), "--datasets", str(tmp / "d.yaml"),
                 "--out", str(tmp / "r")]) == 0
    assert "6 computed, 6 already done, 0 failed" in capsys.readouterr().out


def test_shards_partition_the_grid(grid):
    zoo, dsets, tmp = grid
    a = run_grid(zoo, dsets, RunOptions(out=str(tmp / "r"), shard=(0, 3)), log=lambda *_: None)
    b = run_grid(zoo, dsets, RunOptions(out=str(tmp / "r"), shard=(1, 3)), log=lambda *_: None)
    c = run_grid(zoo, dsets, RunOptions(out=str(tmp / "r"), shard=(2, 3)), log=lambda *_: None)
    assert a.ok + b.ok + c.ok == 12 and min(a.ok, b.ok, c.ok) > 0
    assert len(list((tmp / "r").rglob("*.json"))) == 12
    cells = plan_cells(zoo, dsets, RunOptions())
    assert cells == plan_cells(zoo, dsets, RunOptions())  # deterministic order


def test_filters_and_unknown_filter_names(grid, capsys):
    zoo, dsets, tmp = grid
    s = run_grid(zoo, dsets, RunOptions(out=str(tmp / "r"), models=["mnv2"], datasets=["digits"],
                                        protocols=["nc1"]), log=lambda *_: None)
    assert s.ok == 1
    rc = main(["run", "--zoo", str(tmp / "zoo.yaml"), "--datasets", str(tmp / "d.yaml"), "--out", str(tmp / "r"),
               "--models", "mnv3"])
    assert rc == 2 and "Did you mean mnv2" in capsys.readouterr().err


def test_protocol_seeds_give_one_protocol_its_own_seeds(tmp_path, capsys):
    """settings.protocol_seeds: the named protocol runs its own seeds, the others settings.seeds; --seed overrides
    both; an unknown protocol name there is a config error naming the valid ones."""
    (tmp_path / "zoo.yaml").write_text(ZOO)
    (tmp_path / "d.yaml").write_text(DATA.replace("  target: linear\n",
                                                  "  target: linear\n  protocol_seeds: {knn: [0, 3, 7]}\n"))
    zoo, dsets = load_zoo(tmp_path / "zoo.yaml"), load_datasets(tmp_path / "d.yaml")
    cells = plan_cells(zoo, dsets, RunOptions())
    seeds = {p: sorted({c.seed for c in cells if c.protocol == p}) for p in ("linear", "knn", "nc1")}
    assert seeds == {"linear": [0], "knn": [0, 3, 7], "nc1": [0]}
    assert len(cells) == 2 * 2 * (1 + 3 + 1)
    assert {c.seed for c in plan_cells(zoo, dsets, RunOptions(seeds=[5]))} == {5}
    (tmp_path / "bad.yaml").write_text(DATA.replace("  target: linear\n",
                                                    "  target: linear\n  protocol_seeds: {knnn: [0, 1]}\n"))
    rc = main(["validate", "--zoo", str(tmp_path / "zoo.yaml"), "--datasets", str(tmp_path / "bad.yaml")])
    err = capsys.readouterr().err
    assert rc == 2 and "knnn" in err and "knn" in err and "protocol_seeds" in err
    (tmp_path / "bad2.yaml").write_text(DATA.replace("  target: linear\n",
                                                     "  target: linear\n  protocol_seeds: {knn: [0, 0]}\n"))
    rc = main(["validate", "--zoo", str(tmp_path / "zoo.yaml"), "--datasets", str(tmp_path / "bad2.yaml")])
    assert rc == 2 and "protocol_seeds" in capsys.readouterr().err


def test_a_record_made_under_a_changed_default_is_recomputed(grid):
    """Records keep the protocol defaults they were computed under; when the code's default has changed since
    (planted by editing the record) and the config leaves that hyperparameter unset, the next run recomputes the
    cell and says why; a record without stored defaults (older) and one whose changed key the config sets stay."""
    zoo, dsets, tmp = grid
    logs = []
    opts = RunOptions(out=str(tmp / "r"), protocols=["knn", "linear"], datasets=["digits"], models=["mnv2"])
    assert run_grid(zoo, dsets, opts, log=lambda *_: None).ok == 2
    knn_path = tmp / "r" / "digits" / "mnv2" / "knn__seed0.json"
    lin_path = tmp / "r" / "digits" / "mnv2" / "linear__seed0.json"
    knn, lin = json.loads(knn_path.read_text()), json.loads(lin_path.read_text())
    assert knn["defaults"]["k"] == 20 and lin["defaults"]["n_wd"] == 45
    knn["defaults"]["k"] = 10  # as if the default had been 10 when this record was made
    lin["defaults"]["n_wd"] = 30  # linear's n_wd is set in the config (5): its default does not matter
    knn_path.write_text(json.dumps(knn))
    lin_path.write_text(json.dumps(lin))
    again = run_grid(zoo, dsets, opts, log=logs.append)
    assert (again.ok, again.skipped) == (1, 1)
    assert any(line.startswith("[stale]") and "knn" in line and "k: 10 -> 20" in line for line in logs)
    assert json.loads(knn_path.read_text())["defaults"]["k"] == 20
    del knn["defaults"]  # a record from before defaults were kept: cannot tell, reused
    knn_path.write_text(json.dumps(knn))
    assert run_grid(zoo, dsets, opts, log=lambda *_: None).skipped == 2
