"""Resumed training continues only the same work: a cell's checkpoints are keyed by its config hash (data files'
fingerprint and the hp sweep included), so a kill followed by changed images or a changed sweep gives exactly
what a fresh run gives (the two repros of issue 20)."""
import json

import numpy as np
import pytest
from PIL import Image

from benchmark.config import load_datasets, load_zoo
from benchmark.runner import RunOptions, run_grid
from benchmark.training import runner as truntime

pytestmark = pytest.mark.usefixtures("one_thread")

ZOO = "models:\n  - {name: r, timm: test_resnet, pretrained: false}\n"
DATA = """\
settings: {protocols: [finetune], target: finetune, batch_size: 16}
protocols:
  finetune: {epochs: 2, lr: LRS, wd: [0.0], batch_size: 8}
datasets:
  - {name: f, folder: ROOT, resolution: 32}
"""


def write_images(root, seed):
    """3 classes, each a colour plus noise; `seed` changes every pixel (and so the files' fingerprint)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", 10), ("test", 4)):
        for c in range(3):
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = rng.integers(0, 256, 3) if seed else np.eye(3)[c] * 200
                px = np.clip(base + rng.normal(0, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(d / f"{i}.png")


def configs(tmp, lrs):
    (tmp / "z.yaml").write_text(ZOO)
    (tmp / "d.yaml").write_text(DATA.replace("LRS", lrs).replace("ROOT", str(tmp / "data")))
    return load_zoo(tmp / "z.yaml"), load_datasets(tmp / "d.yaml")


def killed_after_first_sweep_point(monkeypatch, zoo, dsets, out):
    real, calls = truntime.fit, []

    def fit(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the kill: the first sweep point is finished and checkpointed
        return real(*a, **k)
    monkeypatch.setattr(truntime, "fit", fit)
    with pytest.raises(KeyboardInterrupt):
        run_grid(zoo, dsets, RunOptions(out=str(out)), log=lambda *_: None)
    monkeypatch.setattr(truntime, "fit", real)
    ck = out / "f/r/finetune__seed0.ckpt"
    assert (ck / "progress.json").exists() and not (out / "f/r/finetune__seed0.json").exists()


def result(out):
    rec = json.loads((out / "f/r/finetune__seed0.json").read_text())
    assert rec["status"] == "ok", rec.get("error")
    assert not (out / "f/r/finetune__seed0.ckpt").exists()  # removed once the record is on disk
    return {"metrics": rec["metrics"], "hp": rec["hyperparameters"], "sweep": rec["training"]["sweep"],
            "curve": rec["training"]["val_curve"], "config_hash": rec["config_hash"]}


@pytest.mark.parametrize("change", ["images", "lr"])
def test_resume_after_a_change_equals_a_fresh_run(tmp_path, monkeypatch, change):
    write_images(tmp_path / "data", 0)
    zoo, dsets = configs(tmp_path, "[0.05, 0.01]")
    killed_after_first_sweep_point(monkeypatch, zoo, dsets, tmp_path / "r")
    if change == "images":
        write_images(tmp_path / "data", 1)  # every image rewritten: other pixels, other labels' look
    else:
        zoo, dsets = configs(tmp_path, "[1.0e-6, 1.0e-7]")
    logs = []
    run_grid(zoo, dsets, RunOptions(out=str(tmp_path / "r")), log=logs.append)
    assert any("discarded checkpoints" in m for m in logs), logs
    fresh_out = tmp_path / "fresh"
    run_grid(zoo, dsets, RunOptions(out=str(fresh_out)), log=lambda *_: None)
    resumed, fresh = result(tmp_path / "r"), result(fresh_out)
    assert resumed == fresh
    if change == "lr":
        assert resumed["hp"]["lr"] in (1e-6, 1e-7)


def test_resume_of_the_same_work_reuses_the_finished_sweep_point(tmp_path, monkeypatch):
    write_images(tmp_path / "data", 0)
    zoo, dsets = configs(tmp_path, "[0.05, 0.01]")
    killed_after_first_sweep_point(monkeypatch, zoo, dsets, tmp_path / "r")
    real, calls = truntime.fit, []
    monkeypatch.setattr(truntime, "fit", lambda *a, **k: calls.append(1) or real(*a, **k))
    logs = []
    run_grid(zoo, dsets, RunOptions(out=str(tmp_path / "r")), log=logs.append)
    assert len(calls) == 1 and not any("discarded" in m for m in logs)  # only the second point was trained
    monkeypatch.setattr(truntime, "fit", real)
    run_grid(zoo, dsets, RunOptions(out=str(tmp_path / "fresh")), log=lambda *_: None)
    assert result(tmp_path / "r") == result(tmp_path / "fresh")


def test_a_kill_during_the_record_write_keeps_the_finished_training(tmp_path, monkeypatch):
    write_images(tmp_path / "data", 0)
    zoo, dsets = configs(tmp_path, "[0.05]")
    from benchmark import runner
    real_write = runner.write_record

    def killed(path, record):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "write_record", killed)
    with pytest.raises(KeyboardInterrupt):
        run_grid(zoo, dsets, RunOptions(out=str(tmp_path / "r")), log=lambda *_: None)
    assert (tmp_path / "r/f/r/finetune__seed0.ckpt/best.pt").exists()
    monkeypatch.setattr(runner, "write_record", real_write)
    calls = []
    real = truntime.fit
    monkeypatch.setattr(truntime, "fit", lambda *a, **k: calls.append(1) or real(*a, **k))
    run_grid(zoo, dsets, RunOptions(out=str(tmp_path / "r")), log=lambda *_: None)
    assert calls == []  # nothing retrained: the sweep was on disk
    result(tmp_path / "r")
