"""Bad input fails before any work, in one `bench: error:` line naming file:line, key and fix (exit 2).

The settings matrix is the audit's list (issue 11, item 6) plus the neighbours of each range; every case runs the
CLI in-process twice, as `bench validate` and as `bench run`.
"""
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark import protocols as P
from benchmark.cli import main
from benchmark.config import RULES, DatasetEntry, ModelEntry, Settings
from benchmark.data import plan_splits
from benchmark.data.sources import ArrayImages, SourceData, SourceSplit
from benchmark.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"name": "a", "timm": "resnet18", "pretrained": "false"}
SETTINGS = {"protocols": "[knn]", "target": "knn"}
DATASET = {"name": "d", "packaged": "digits"}


def _yaml(settings, protocols, dataset, model):
    data = ["settings:"] + [f"  {k}: {v}" for k, v in settings.items()] + ["protocols:"]
    for proto, hp in protocols.items():
        data += [f"  {proto}:"] + [f"    {k}: {v}" for k, v in hp.items()]
    data += ["datasets:", f"  - name: {dataset['name']}"] + [f"    {k}: {v}" for k, v in dataset.items() if k != "name"]
    zoo = ["models:", f"  - name: {model['name']}"] + [f"    {k}: {v}" for k, v in model.items() if k != "name"]
    return "\n".join(data) + "\n", "\n".join(zoo) + "\n"


# (section, key, YAML value): each one bad setting
BAD = [
    ("settings", "batch_size", "0"), ("settings", "num_workers", "-1"), ("settings", "seeds", "[]"),
    ("settings", "seeds", "[0, 0]"), ("settings", "seeds", "[-1]"), ("settings", "seeds", "[a]"),
    ("settings", "protocols", "[]"), ("settings", "protocols", "[knn, knn]"),
    ("dataset", "resolution", "0"), ("dataset", "resolution", "4"), ("dataset", "max_train_per_class", "-1"),
    ("dataset", "max_train_per_class", "0"), ("dataset", "max_test_per_class", "0"), ("dataset", "split_seed", "-1"),
    ("dataset", "val_fraction", "1.0"), ("dataset", "val_fraction", "0"), ("dataset", "shots", "0"),
    ("finetune", "epochs", "0"), ("finetune", "lr", "[-0.5]"), ("finetune", "lr", "[1000]"), ("finetune", "lr", "[]"),
    ("finetune", "lr", "[0.1, 0.1]"), ("finetune", "wd", "-1"), ("finetune", "batch_size", "0"),
    ("finetune", "momentum", "1.5"), ("bn_tune", "bn_layers", "some"), ("daft", "lr_head", "[0]"),
    ("layer_ft", "block", "-1"), ("knn", "k", "0"), ("knn", "temperature", "0"), ("linear", "n_wd", "0"),
    ("linear", "wds", "[]"), ("linear", "wds", "[1.0, -1]"), ("linear", "tol", "0"),
    ("model", "interpolation", "cubicc"), ("model", "mean", "[0.5, 0.5]"), ("model", "std", "[0.5, 0, 0.5]"),
    ("model", "crop_pct", "0"), ("model", "crop_pct", "1.5"), ("model", "input_size", "0"),
    ("model", "drop", "['fc(']"), ("dataset", "resolution", "100000"), ("model", "input_size", "5000"),
    ("model", "max_checkpoint_gb", "0"), ("model", "max_checkpoint_gb", "-1"),
]


@pytest.mark.parametrize("section,key,value", BAD, ids=[f"{s}.{k}={v}" for s, k, v in BAD])
def test_each_bad_setting_is_one_line_exit_2_from_validate_and_run(tmp_path, capsys, section, key, value):
    settings, protocols, dataset, model = dict(SETTINGS), {}, dict(DATASET), dict(MODEL)
    target = {"settings": settings, "dataset": dataset, "model": model}.get(section)
    if target is None:
        target = protocols.setdefault(section, {})
    target[key] = value
    data_text, zoo_text = _yaml(settings, protocols, dataset, model)
    path = tmp_path / ("zoo.yaml" if section == "model" else "d.yaml")
    (tmp_path / "d.yaml").write_text(data_text)
    (tmp_path / "zoo.yaml").write_text(zoo_text)
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if t.strip() == f"{key}: {value}")
    for argv in (["validate"], ["run", "--out", str(tmp_path / "r")]):
        code = main(argv + ["--zoo", str(tmp_path / "zoo.yaml"), "--datasets", str(tmp_path / "d.yaml")])
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv, err)
        assert len(err.splitlines()) == 1 and err.startswith("bench: error:"), err
        assert f"{path}:{line}:" in err and f" {key} " in err, err
        assert "must be" in err or "single value" in err, err
    assert not (tmp_path / "r").exists()  # nothing started


def test_good_boundaries_pass(tmp_path, capsys):
    settings = {**SETTINGS, "seeds": "[0, 3]", "num_workers": "0", "batch_size": "1"}
    protocols = {"finetune": {"lr": "[10, 0.001]", "wd": "0", "epochs": "1"}, "knn": {"k": "1"},
                 "linear": {"wds": "[1.0e-3, 1]", "n_wd": "1"}, "daft": {"lr_head": "[100, 0.1]"}}
    dataset = {**DATASET, "resolution": "8", "max_train_per_class": "1", "val_fraction": "0.5", "split_seed": "0"}
    model = {**MODEL, "crop_pct": "1", "std": "[0.2, 0.2, 0.2]", "interpolation": "bicubic"}
    data_text, zoo_text = _yaml(settings, protocols, dataset, model)
    (tmp_path / "d.yaml").write_text(data_text)
    (tmp_path / "zoo.yaml").write_text(zoo_text)
    assert main(["validate", "--zoo", str(tmp_path / "zoo.yaml"), "--datasets", str(tmp_path / "d.yaml")]) == 0, \
        capsys.readouterr().err


def test_daft_refuses_a_list_outside_its_staged_keys(tmp_path, capsys):
    data_text, zoo_text = _yaml(SETTINGS, {"daft": {"wd": "[0, 1.0e-4]"}}, DATASET, MODEL)
    (tmp_path / "d.yaml").write_text(data_text)
    (tmp_path / "zoo.yaml").write_text(zoo_text)
    assert main(["validate", "--zoo", str(tmp_path / "zoo.yaml"), "--datasets", str(tmp_path / "d.yaml")]) == 2
    assert "give wd a single value" in capsys.readouterr().err


def test_every_numeric_or_list_setting_declares_a_range():
    """A new config field or hyperparameter without a range fails here, not silently at run time."""
    for cls in (ModelEntry, DatasetEntry, Settings):
        for f in fields(cls):
            if any(t in str(f.type) for t in ("int", "float", "list")):
                assert f.name in RULES[cls], f"{cls.__name__}.{f.name} has no rule in config.RULES"
        assert set(RULES[cls]) <= {f.name for f in fields(cls)}
    for name in P.all_protocol_names():
        if P.kind_of(name) == "proxy":
            defaults, declared = P.proxy_hp_defaults(name), P.PROXIES.get(name).ranges
        else:
            proto = P.training_protocols().get(name)
            defaults, declared = proto.defaults, proto.ranges
        for key, default in defaults.items():
            if default is None or isinstance(default, (list, int, float)) and not isinstance(default, bool):
                assert key in declared, f"hyperparameter {name}.{key} has no declared range"
            assert P.hp_rules(name)[key] is None or P.hp_rules(name)[key].problem(default) is None, (name, key)


def _tiny_config(tmp_path):
    data_text, zoo_text = _yaml(SETTINGS, {}, DATASET, MODEL)
    (tmp_path / "d.yaml").write_text(data_text)
    (tmp_path / "zoo.yaml").write_text(zoo_text)
    return ["--zoo", str(tmp_path / "zoo.yaml"), "--datasets", str(tmp_path / "d.yaml")]


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bench: error:"), err
    return err


def test_cli_argument_errors_are_one_line(tmp_path, capsys):
    cfg = _tiny_config(tmp_path)
    (tmp_path / "afile").write_text("x")
    assert main(["run", *cfg, "--out", str(tmp_path / "afile")]) == 2
    err = _one_error(capsys)
    assert "--out" in err and "is a file" in err
    assert main(["run", *cfg, "--out", str(tmp_path / "afile" / "sub")]) == 2  # a folder inside a file
    assert "not writable" in _one_error(capsys)
    assert main(["run", *cfg, "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "afile")]) == 2
    assert "--cache-dir" in _one_error(capsys)
    assert main(["run", *cfg, "--seed", "abc"]) == 2
    assert "--seed" in _one_error(capsys)
    assert main(["run", *cfg, "--seed", "1,1"]) == 2
    assert "distinct" in _one_error(capsys)
    assert main(["run", *cfg, "--out", str(tmp_path / "r"), "--protocols", "linaer"]) == 2
    err = _one_error(capsys)
    assert "--protocols: unknown protocol 'linaer'" in err and "Did you mean linear" in err and "d.yaml" not in err
    assert main(["run", *cfg, "--out", str(tmp_path / "r"), "--models", "b"]) == 2
    assert "--models: unknown model 'b'" in _one_error(capsys)
    assert main(["run", *cfg, "--out", str(tmp_path / "r"), "--device", "nonsense"]) == 2
    assert "--device" in _one_error(capsys)
    assert main(["run", *cfg, "--shard", "3/2"]) == 2
    assert "--shard" in _one_error(capsys)
    assert main(["report", "--results", str(tmp_path), "--out", str(tmp_path / "afile")]) == 2
    assert "is a file" in _one_error(capsys)


def test_out_on_a_read_only_filesystem_fails_before_any_work(tmp_path, capsys):
    ro = Path("/proc/bench-test-out")  # procfs refuses new folders, even to root
    cfg = _tiny_config(tmp_path)
    assert main(["run", *cfg, "--out", str(ro)]) == 2
    assert "--out" in _one_error(capsys) and not (tmp_path / "r").exists()


def test_report_table_errors_name_the_file_and_row(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text('model,dataset,metric,value\n"a,d,acc,1\nb,d,acc,2\n')
    assert main(["report", "--table", str(bad), "--target", "acc", "--out", str(tmp_path / "o")]) == 2
    assert "malformed CSV" in _one_error(capsys)
    bad.write_text(b"\xff\xfe\x00garbage".decode("latin-1"), encoding="latin-1")
    assert main(["report", "--table", str(bad), "--target", "acc", "--out", str(tmp_path / "o")]) == 2
    _one_error(capsys)
    bad.write_text("model,dataset,metric,value\na,d,acc,1\na,d,p,2\nb,d,acc,3\nb,d,p,n/a?\n")
    assert main(["report", "--table", str(bad), "--target", "acc", "--out", str(tmp_path / "o")]) == 2
    err = _one_error(capsys)
    assert f"{bad}:5:" in err and "'n/a?'" in err and "not a number" in err
    bad.write_text("model,dataset,metric,value\na,d,acc,1\n")
    assert main(["report", "--table", str(bad), "--target", "acc", "--percent", "nope",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--percent: unknown metric 'nope'" in _one_error(capsys)


def test_help_builds_without_torch():
    code = "import benchmark.cli, sys; benchmark.cli.build_parser(); assert 'torch' not in sys.modules, 'torch'; " \
           "assert 'scipy' not in sys.modules, 'scipy'"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
    assert main(["--help"]) == 0


def _source(counts, test_counts=None):
    labels = np.repeat(np.arange(len(counts)), counts)
    splits = {"train": SourceSplit(ArrayImages(np.zeros((len(labels), 4, 4), np.uint8), labels), labels)}
    if test_counts:
        t = np.repeat(np.arange(len(test_counts)), test_counts)
        splits["test"] = SourceSplit(ArrayImages(np.zeros((len(t), 4, 4), np.uint8), t), t)
    return SourceData(splits, [f"c{i}" for i in range(len(counts))], {})


def test_split_planner_keeps_every_class_in_every_split_or_says_which_cannot():
    entry = DatasetEntry(name="d", folder="x")
    plan = plan_splits(entry, _source([3, 3, 50]))  # 3 images: one each for test, val and train
    y = np.repeat(np.arange(3), [3, 3, 50])
    for split in ("train", "val", "test"):
        assert set(y[plan[split][1]]) == {0, 1, 2}, split
    with pytest.raises(ConfigError, match=r"dataset 'd': class 'c1' has 1 training image\(s\) left for the val "
                                          r"carve.*at least 3 per class"):
        plan_splits(entry, _source([5, 2, 50]))  # 2 images: the test carve takes one, none left for val
    with pytest.raises(ConfigError, match="class 'c0' has 1 training image.*test carve"):
        plan_splits(entry, _source([1, 10, 10]))
    with pytest.raises(ConfigError, match="1 class"):
        plan_splits(entry, _source([10]))
    capped = DatasetEntry(name="d", folder="x", max_train_per_class=1)
    with pytest.raises(ConfigError, match="raise max_train_per_class to at least 2"):
        plan_splits(capped, _source([5, 5], test_counts=[3, 3]))
    with pytest.raises(ConfigError, match="test split has fewer than two classes"):
        plan_splits(entry, _source([5, 5], test_counts=[3]))


def test_rank_on_a_one_class_folder_fails_on_stderr_with_exit_2(tmp_path, capsys):
    folder = tmp_path / "one" / "train" / "only"
    folder.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(folder / f"{i}.png")
    (tmp_path / "zoo.yaml").write_text(_yaml(SETTINGS, {}, DATASET, MODEL)[1])
    assert main(["rank", "--zoo", str(tmp_path / "zoo.yaml"), "--dataset", str(tmp_path / "one"),
                 "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    assert "1 class(es) ('only')" in captured.err and "bench: error:" in captured.err and not captured.out
    assert main(["rank", "--zoo", str(tmp_path / "zoo.yaml"), "--dataset", str(tmp_path / "one"),
                 "--resolution", "0"]) == 2
    assert "--resolution is 0" in _one_error(capsys)


def test_report_names_corrupt_records(tmp_path, capsys):
    import json

    import pandas as pd
    res = tmp_path / "r"
    for model, top1 in (("m1", 50.0), ("m2", 70.0), ("m3", 60.0)):
        for proto, value in (("knn", top1), ("linear", top1 + 1)):
            path = res / "d" / model / f"{proto}__seed0.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"model": model, "dataset": "d", "protocol": proto, "seed": 0, "status": "ok",
                                        "metrics": {"top1": value}, "primary": "top1", "higher_is_better": True}))
    (res / "d" / "m2" / "linear__seed0.json").write_text('{"model": "m2", "dataset": "d", "proto')  # killed mid-write
    (res / "d" / "m3" / "linear__seed0.json").write_text('{"hello": 1}')
    assert main(["report", "--results", str(res), "--out", str(tmp_path / "o"), "--target", "knn",
                 "--bootstrap", "0", "--no-figures"]) == 0
    err = capsys.readouterr().err
    assert err.count("bench: warning: corrupt record") == 2 and "not valid JSON" in err
    missing = pd.read_csv(tmp_path / "o" / "missing.csv")
    assert sorted(zip(missing.model, missing.status)) == [("m2", "corrupt"), ("m3", "corrupt")]
    assert "absent" not in set(missing.status)
    index = (tmp_path / "o" / "README.md").read_text()
    assert "2 corrupt" in index and "| m2 | d | linear | last | 0 | corrupt |" in index


def test_a_model_that_fails_to_load_is_tried_once_per_group(tmp_path, monkeypatch):
    import benchmark.runner as runner
    from benchmark.config import load_datasets, load_zoo
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    (tmp_path / "zoo.yaml").write_text(f"models:\n  - name: broken\n    checkpoint: {bad}\n    arch: resnet18\n")
    (tmp_path / "d.yaml").write_text("settings:\n  protocols: [knn, nc1, cdnv]\n  target: knn\n"
                                     "datasets:\n  - name: d\n    packaged: digits\n    resolution: 8\n")
    calls = []
    real = runner.load_model
    monkeypatch.setattr(runner, "load_model", lambda *a, **k: calls.append(a) or real(*a, **k))
    s = runner.run_grid(load_zoo(tmp_path / "zoo.yaml"), load_datasets(tmp_path / "d.yaml"),
                        runner.RunOptions(out=str(tmp_path / "r")), log=lambda *_: None)
    assert len(calls) == 1 and len(s.errors) == 3
    assert len({msg for _, msg in s.errors}) == 1  # every cell carries the one load error
