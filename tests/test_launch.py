"""Launchers without a cluster: flags, provenance, the shared cache with many writers, the local launcher end to end
(submitit's local executor), and `bench status`. The SLURM tests are in test_slurm.py."""
import argparse
import json
import threading

import pytest
import torch

from benchmark.cli import build_parser, main
from benchmark.config import load_datasets, load_zoo
from benchmark.features import FeatureCache
from benchmark.launch.args import _minutes, slurm_options
from benchmark.launch.plan import cell_states, make_plan
from benchmark.records import iter_records, provenance
from benchmark.runner import RunOptions


@pytest.mark.parametrize("text,minutes", [("90", 90), ("1:30:00", 90), ("2-00:00:00", 2880), ("1-2", 1560),
                                          ("10:30", 11), ("0:0:1", 1)])
def test_time_forms_follow_sbatch(text, minutes):
    assert _minutes(text) == minutes


def test_slurm_flags_become_the_typed_request():
    args = build_parser().parse_args(["run", "--launcher", "slurm", "--partition", "gpu", "--gpus-per-task", "2",
                                      "--mem", "64G", "--time", "4:00:00", "--qos", "high", "--account", "lab",
                                      "--constraint", "a100", "--array-parallelism", "16",
                                      "--slurm-arg", "gres=gpu:a100:1", "--slurm-arg", "exclude=n1"])
    s = slurm_options(args)
    assert (s.partition, s.gpus_per_task, s.mem, s.time_min, s.qos, s.account, s.constraint,
            s.array_parallelism) == ("gpu", 2, "64G", 240, "high", "lab", "a100", 16)
    assert s.extra == {"gres": "gpu:a100:1", "exclude": "n1"}
    defaults = slurm_options(build_parser().parse_args(["run"]))
    assert defaults.gpus_per_task == 1 and defaults.time_min == 24 * 60  # one GPU per task by default
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--slurm-arg", "novalue"])
    with pytest.raises(argparse.ArgumentTypeError):
        _minutes("soon")


def test_provenance_names_slurm_job_task_and_node(monkeypatch):
    for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURMD_NODENAME", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(k, raising=False)
    assert not any(k.startswith("slurm") for k in provenance("cpu", 1.0))
    monkeypatch.setenv("SLURM_JOB_ID", "1042")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "1040")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURMD_NODENAME", "gpu17")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    p = provenance("cpu", 1.0)
    assert (p["slurm_job_id"], p["slurm_array_task_id"], p["slurm_node"], p["slurm_restart_count"]) == \
        ("1040", "2", "gpu17", 1)
    if torch.cuda.is_available():
        assert provenance("cuda", 1.0)["gpu"] == torch.cuda.get_device_name(0)


def test_two_writers_of_one_feature_key_never_corrupt_it(tmp_path):
    """Two writers of the same key, as two array tasks sharing a model would be. They are threads of one process,
    so they also share a pid, as tasks on two nodes of a shared filesystem can: pid-only temp names interleave."""
    cache = FeatureCache(tmp_path)
    key = {"model_name": "m", "dataset_name": "d", "split": "train"}
    blobs = [torch.full((2000, 64), float(i)) for i in range(2)]
    labels = torch.arange(2000)
    errors, seen = [], set()

    def write(i):
        try:
            for _ in range(15):
                cache.save(key, blobs[i], labels)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(e))

    def read(stop):
        while not stop.is_set():
            if cache.path(key).exists():
                blob = torch.load(cache.path(key), weights_only=True)  # raises on a torn file
                assert blob["features"].shape == (2000, 64)
                seen.add(float(blob["features"].unique().item()))  # exactly one writer's tensor, never a mix

    stop = threading.Event()
    reader = threading.Thread(target=read, args=(stop,))
    writers = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    reader.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=60)
    stop.set()
    reader.join(timeout=60)
    assert not errors
    assert seen <= {0.0, 1.0} and seen
    feats, _, _ = cache.load(key)
    assert feats.unique().numel() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [cache.path(key).name]  # no temp files left


ZOO = "models:\n  - {name: r18, timm: resnet18, pretrained: false}\n"
DATA = """\
settings: {protocols: [nc1], batch_size: 64}
datasets:
  - {name: digits, packaged: digits, resolution: 32, max_train_per_class: 6, max_test_per_class: 3}
  - {name: digits_bad, packaged: digits, resolution: 32, max_train_per_class: 6, max_test_per_class: 3, shots: 50}
"""


def test_local_launcher_runs_shards_through_submitit(tmp_path, capsys):
    (tmp_path / "z.yaml").write_text(ZOO)
    (tmp_path / "d.yaml").write_text(DATA)
    out = tmp_path / "r"
    argv = ["run", "--zoo", str(tmp_path / "z.yaml"), "--datasets", str(tmp_path / "d.yaml"), "--out", str(out),
            "--launcher", "local", "--num-shards", "1", "--wait-timeout", "240"]  # one process: tests stay fast
    assert main(argv) == 1  # one cell fails
    text = capsys.readouterr().out
    assert "submitted 1 of 1 shards (2 cells to compute) through local" in text
    assert "tasks: 1 shards submitted; completed 1" in text
    assert "error:   r18 × digits_bad × nc1 (seed 0): few-shot: class 0 has" in text
    ok = json.loads((out / "digits" / "r18" / "nc1__seed0.json").read_text())
    bad = json.loads((out / "digits_bad" / "r18" / "nc1__seed0.json").read_text())
    assert ok["status"] == "ok" and bad["status"] == "error" and "shots=50" in bad["error"]
    assert main(["status", "--results", str(out)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split() == ["nc1", "1", "1", "0", "0"]  # done failed not_applicable missing
    subs = json.loads((out / ".launch" / "submissions.json").read_text())
    assert [[t["shard"] for t in s["tasks"]] for s in subs] == [[0]]  # shards and re-runs: see test_slurm.py
    # the launcher's own JSON files beside the records are not records
    assert sorted(str(p.relative_to(out)) for p, _ in iter_records(out)) == ["digits/r18/nc1__seed0.json",
                                                                            "digits_bad/r18/nc1__seed0.json"]


def test_status_of_an_in_process_run_counts_missing_cells(tmp_path, capsys):
    (tmp_path / "z.yaml").write_text(ZOO)
    (tmp_path / "d.yaml").write_text(DATA)
    out = tmp_path / "r"
    assert main(["status", "--results", str(out)]) == 2  # nothing planned there yet: one clear line
    assert "no .launch/plan.json" in capsys.readouterr().err
    assert main(["run", "--zoo", str(tmp_path / "z.yaml"), "--datasets", str(tmp_path / "d.yaml"), "--out", str(out),
                 "--only-datasets", "digits"]) == 0
    capsys.readouterr()
    main(["status", "--results", str(out)])
    assert capsys.readouterr().out.splitlines()[1].split() == ["nc1", "1", "0", "0", "0"]
    # a changed config makes the old record stale: the cell counts as missing again
    (tmp_path / "d.yaml").write_text(DATA.replace("max_test_per_class: 3}", "max_test_per_class: 4}", 1))
    opts = RunOptions(out=str(out), datasets=["digits"])
    plan = make_plan(load_zoo(tmp_path / "z.yaml"), load_datasets(tmp_path / "d.yaml"), opts, None)
    assert [s for _, s, _ in cell_states(out, plan)] == ["missing"]
