"""A seed fixes every result; resumed runs equal uninterrupted ones; concurrent runs split the work; changed
images invalidate features and records; claims of dead owners are broken."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from benchmark.config import load_datasets, load_zoo
from benchmark.locks import CellLock
from benchmark.runner import RunOptions, run_grid

ZOO = """\
models:
  - {name: mnv2, package: mobilenetv2_100}
  - {name: r18_random, timm: resnet18, pretrained: false}
"""
DATA = """\
settings: {protocols: [knn, linear, bn_tune], batch_size: 64, target: bn_tune}
protocols:
  linear: {n_wd: 4}
  bn_tune: {epochs: 2, lr: [0.01, 0.001], batch_size: 8}
datasets:
  - {name: textures, packaged: textures, resolution: 32, max_train_per_class: 12, max_test_per_class: 6}
"""


def _metrics(out):
    recs = {}
    for p in sorted(out.rglob("*__seed*.json")):
        r = json.loads(p.read_text())
        assert r["status"] == "ok", r.get("error")
        recs[str(p.relative_to(out))] = (r["metrics"], r.get("hyperparameters"))
    return recs


def _grid(tmp_path, zoo=ZOO, data=DATA):
    (tmp_path / "z.yaml").write_text(zoo)
    (tmp_path / "d.yaml").write_text(data)
    return load_zoo(tmp_path / "z.yaml"), load_datasets(tmp_path / "d.yaml")


def test_same_seed_same_numbers_and_resume_equals_uninterrupted(tmp_path, monkeypatch):
    zoo, dsets = _grid(tmp_path)
    quiet = dict(log=lambda *_: None)
    run_grid(zoo, dsets, RunOptions(out=str(tmp_path / "a")), **quiet)
    run_grid(zoo, dsets, RunOptions(out=str(tmp_path / "b")), **quiet)
    first = _metrics(tmp_path / "a")
    assert len(first) == 6 and first == _metrics(tmp_path / "b")  # bit-identical, random twin included

    # Kill a training cell in its second sweep point, then resume in a fresh grid run.
    import benchmark.training.engine as engine
    real, calls = engine.evaluate, []

    def dying(*a, **k):
        calls.append(1)
        if len(calls) == 3:  # after epoch 1 of the second sweep point
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(engine, "evaluate", dying)
    with pytest.raises(KeyboardInterrupt):
        run_grid(zoo, dsets, RunOptions(out=str(tmp_path / "c"), models=["mnv2"], protocols=["bn_tune"]), **quiet)
    monkeypatch.setattr(engine, "evaluate", real)
    assert not (tmp_path / "c/textures/mnv2/bn_tune__seed0.json").exists()
    assert not list((tmp_path / "c").rglob("*.lock"))  # the interrupted run released its claim
    run_grid(zoo, dsets, RunOptions(out=str(tmp_path / "c"), models=["mnv2"], protocols=["bn_tune"]), **quiet)
    resumed = _metrics(tmp_path / "c")
    assert resumed["textures/mnv2/bn_tune__seed0.json"] == first["textures/mnv2/bn_tune__seed0.json"]


def test_two_concurrent_runs_compute_each_cell_once(tmp_path):
    _grid(tmp_path)
    cmd = [sys.executable, "-m", "benchmark.cli", "run", "--zoo", str(tmp_path / "z.yaml"), "--datasets",
           str(tmp_path / "d.yaml"), "--out", str(tmp_path / "r"), "--device", "cpu"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    done = [{ln.split(":")[0] for ln in o.splitlines() if ln.startswith("[ok]")} for o in outs]
    assert len(done[0] | done[1]) == 6 and not (done[0] & done[1]), outs  # split, never duplicated
    assert len(_metrics(tmp_path / "r")) == 6 and not list((tmp_path / "r").rglob("*.lock"))


def test_changed_folder_images_invalidate_features_and_records(tmp_path):
    rng = np.random.default_rng(0)

    def write_images(value_shift):
        for c in ("a", "b"):
            d = tmp_path / "img" / "train" / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(8):
                arr = rng.integers(0, 120, size=(20, 20, 3)) + (value_shift if c == "a" else 0)
                Image.fromarray(arr.astype(np.uint8)).save(d / f"{i}.png")
    write_images(0)
    zoo, dsets = _grid(tmp_path, "models:\n  - {name: mnv2, package: mobilenetv2_100}\n",
                       f"settings: {{protocols: [nc1, knn]}}\ndatasets:\n"
                       f"  - {{name: f, folder: {tmp_path / 'img'}, resolution: 32}}\n")
    opts = RunOptions(out=str(tmp_path / "r"))
    first = run_grid(zoo, dsets, opts, log=lambda *_: None)
    assert first.ok == 2 and first.features_computed == 3
    again = run_grid(zoo, dsets, opts, log=lambda *_: None)
    assert again.skipped == 2 and again.features_computed == 0
    time.sleep(0.01)
    write_images(130)  # same file names, new pixels: class a becomes bright
    third = run_grid(zoo, dsets, opts, log=lambda *_: None)
    assert third.ok == 2 and third.features_computed == 3  # records and features were both invalidated


def test_claims_split_work_and_dead_owners_are_broken(tmp_path):
    rec = tmp_path / "cell.json"
    a, b = CellLock(rec), CellLock(rec)
    assert a.acquire() and not b.acquire()  # a live owner (this process) keeps its claim
    a.release()
    assert b.acquire()
    b.release()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket
    rec.with_suffix(".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "token": "x"}))
    c = CellLock(rec)
    assert c.acquire() and c.owner()["pid"] == os.getpid()  # the dead owner's claim was broken
    c.release()
    assert not rec.with_suffix(".lock").exists()


def test_devices_run_one_worker_each_over_disjoint_groups(tmp_path):
    (tmp_path / "z.yaml").write_text(ZOO)
    (tmp_path / "d.yaml").write_text("settings: {protocols: [nc1]}\ndatasets:\n"
                                     "  - {name: digits, packaged: digits, resolution: 32, max_train_per_class: 10}\n")
    out = subprocess.run([sys.executable, "-m", "benchmark.cli", "run", "--zoo", str(tmp_path / "z.yaml"),
                          "--datasets", str(tmp_path / "d.yaml"), "--out", str(tmp_path / "r"),
                          "--devices", "cpu,cpu"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "2 workers on cpu, cpu" in out.stdout and out.stdout.count("done: 1 computed") == 2
    assert len(_metrics(tmp_path / "r")) == 2
