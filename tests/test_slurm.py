"""`bench run --launcher slurm` against a real SLURM (../shared/slurm/start-local-slurm.sh: one node, accounting on,
no GPUs). Skipped with the reason when no cluster answers; `.ci/run` starts one and sets BENCH_SLURM_TESTS=1, which
turns a missing cluster into a failure. Every wait is bounded; array tasks left behind are cancelled."""
import json
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from benchmark.cli import main
from benchmark.config import load_datasets, load_zoo
from benchmark.launch.args import SlurmOptions
from benchmark.launch.launchers import make_launcher
from benchmark.launch.plan import load_submissions
from benchmark.records import read_record
from benchmark.runner import RunOptions, run_grid


def _cluster_problem() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM client here (sinfo/sbatch not on PATH); start ../shared/slurm/start-local-slurm.sh"
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError) as e:
        return f"sinfo failed: {e}"
    if r.returncode != 0:
        return f"sinfo failed: {(r.stderr or r.stdout).strip()[:200]}"
    if not any(s.strip().rstrip("*~#") in ("idle", "mixed", "allocated", "completing") for s in r.stdout.split()):
        return f"no SLURM node is up (sinfo: {r.stdout.strip()})"
    return None


PROBLEM = _cluster_problem()
pytestmark = [pytest.mark.slurm,
              pytest.mark.skipif(PROBLEM is not None and not os.environ.get("BENCH_SLURM_TESTS"),
                                 reason=str(PROBLEM))]


@pytest.fixture(autouse=True)
def cluster_required():
    if PROBLEM is not None:  # only reached under BENCH_SLURM_TESTS=1 (CI): no cluster there is a failure
        pytest.fail(f"BENCH_SLURM_TESTS is set but {PROBLEM}")


# What the test cluster offers: no GRES (so no GPUs), 2 cores; each task 1 core so two run at once.
SMALL = ["--launcher", "slurm", "--gpus-per-task", "0", "--cpus-per-task", "1", "--mem", "1G", "--time", "10"]
ZOO = "models:\n  - {name: r18, timm: resnet18, pretrained: false}\n"
# Real (packaged) weights for the comparison with an in-process run: a random init differs between processes.
ZOO_REAL = "models:\n  - {name: r18, package: mobilenetv2_100}\n"
DIGITS = "packaged: digits, resolution: 32, max_train_per_class: 10, max_test_per_class: 4"
PROXIES = f"""\
settings: {{protocols: [knn, nc1], batch_size: 64}}
datasets:
  - {{name: digits, {DIGITS}}}
  - {{name: digits_b, {DIGITS}, split_seed: 1}}
  - {{name: digits_bad, {DIGITS}, shots: 50}}
"""
# timm's tiny test ResNet: an epoch of 4 steps is ~0.3 s unloaded, its checkpoints are small.
ZOO_TINY = "models:\n  - {name: r18, timm: test_resnet, pretrained: false}\n"
TRAINING = """\
settings: {{protocols: [nc1, finetune], batch_size: 64}}
protocols:
  finetune: {{epochs: {epochs}, lr: [0.01], wd: [0.0], batch_size: 25}}
datasets:
  - {{name: digits, {digits}}}
  - {{name: digits_b, {digits}, split_seed: 1}}
"""


def wait_until(pred, limit: float, what: str, poll: float = 0.5):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"gave up after {limit:.0f}s waiting for {what}")


def setup_grid(tmp_path, data: str, zoo: str = ZOO):
    (tmp_path / "z.yaml").write_text(zoo)
    (tmp_path / "d.yaml").write_text(data)
    out = tmp_path / "r"
    argv = ["run", "--zoo", str(tmp_path / "z.yaml"), "--datasets", str(tmp_path / "d.yaml"), "--out", str(out)]
    return out, argv + SMALL


def tasks(out):
    """[(shard, job)] of every submitted task, in submission order."""
    launcher = make_launcher("slurm", out, SlurmOptions())
    return [(t["shard"], launcher.job(t["job_id"])) for s in load_submissions(out) for t in s["tasks"]]


def state(job) -> str:
    return make_launcher("slurm", ".", SlurmOptions()).state(job)


def ckpt_epoch_files(out, dataset):
    return [p for p in (out / dataset / "r18").glob("finetune__seed0.ckpt/*.pt") if p.name != "best.pt"]


@pytest.fixture
def cancel_leftovers():
    """Cancel whatever array tasks a failing test leaves in the queue."""
    outs = []
    yield outs.append
    for out in outs:
        ids = [j.job_id for _, j in tasks(out)]
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def proxy_array(tmp_path_factory):
    """A 3-shard array (one shard's cells all fail), and the same grid run in-process while it runs."""
    tmp = tmp_path_factory.mktemp("array")
    out, argv = setup_grid(tmp, PROXIES, ZOO_REAL)
    ref = tmp / "ref"
    # the reference in-process run goes on in a thread while the array runs and `--wait` watches it
    inproc = threading.Thread(target=run_grid, args=(load_zoo(tmp / "z.yaml"), load_datasets(tmp / "d.yaml"),
                                                     RunOptions(out=str(ref))), kwargs={"log": lambda *_: 0})
    inproc.start()
    try:
        rc = main(argv + ["--wait", "--wait-timeout", "180"])
        inproc.join(timeout=180)
        assert not inproc.is_alive()
    finally:
        subprocess.run(["scancel", *[j.job_id for _, j in tasks(out)]], capture_output=True, timeout=30)
    return out, ref, rc


def test_array_of_three_shards_gives_the_in_process_records(proxy_array):
    out, ref, rc = proxy_array
    assert rc == 1  # the digits_bad cells failed
    (sub,) = load_submissions(out)
    assert [t["shard"] for t in sub["tasks"]] == [0, 1, 2]
    array = sub["tasks"][0]["job_id"].split("_")[0]
    refs = sorted(p.relative_to(ref) for p in ref.rglob("*.json"))
    assert len(refs) == 6
    for rel in refs:
        a, b = read_record(ref / rel), read_record(out / rel)
        for key in ("status", "config_hash", "hyperparameters", "error", "n", "feature_dim"):
            assert a.get(key) == b.get(key), (rel, key)
        for k, v in (a.get("metrics") or {}).items():  # same numbers up to float summation order (threads)
            assert b["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-9), (rel, k)
        shard = ["digits", "digits_b", "digits_bad"].index(b["dataset"])
        p = b["provenance"]
        assert (p["slurm_job_id"], p["slurm_array_task_id"], p["slurm_node"]) == (array, str(shard),
                                                                                socket.gethostname().split(".")[0])


def test_failing_cells_give_error_records_while_the_other_shards_finish(proxy_array):
    out, _, _ = proxy_array
    for proto in ("knn", "nc1"):
        bad = read_record(out / "digits_bad" / "r18" / f"{proto}__seed0.json")
        assert bad["status"] == "error" and "fewer than shots=50" in bad["error"] and bad["traceback"]
        assert read_record(out / "digits" / "r18" / f"{proto}__seed0.json")["status"] == "ok"
    assert [state(j) for _, j in tasks(out)] == ["COMPLETED"] * 3


def test_status_reports_cells_tasks_and_errors(proxy_array, capsys):
    out, _, _ = proxy_array
    assert main(["status", "--results", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["protocol", "done", "failed", "not_applicable", "missing"]
    assert lines[1].split() == ["knn", "2", "1", "0", "0"] and lines[2].split() == ["nc1", "2", "1", "0", "0"]
    assert "tasks: 3 shards submitted; completed 3" in lines
    assert sum(line.startswith("  error:   r18 × digits_bad") for line in lines) == 2


def test_task_killed_by_scancel_mid_run_leaves_no_partial_record_and_a_rerun_completes_only_what_is_missing(
        tmp_path, capsys, cancel_leftovers):
    # 24 epochs: the kill must land mid-training; 8 could finish first on a quiet machine (seen once in CI)
    out, argv = setup_grid(tmp_path, TRAINING.format(epochs=24, digits=DIGITS), ZOO_TINY)
    cancel_leftovers(out)
    assert main(argv) == 0
    (_, first), (_, second) = tasks(out)
    wait_until(lambda: ckpt_epoch_files(out, "digits_b"), 150, "an epoch checkpoint of shard 1")
    # A plain scancel sends SIGTERM, which submitit's worker ignores, and SIGKILL KillWait (5 s) later: on a fast
    # machine the cell could finish meanwhile. SIGKILL sent to the task's step cuts it right where we look.
    subprocess.run(["scancel", "--signal=KILL", f"{second.job_id}.0"], check=True, timeout=30)
    wait_until(lambda: first.done() and second.done(), 120, "both tasks to end")
    assert state(first) == "COMPLETED" and state(second) == "FAILED"  # its process died: SLURM says FAILED
    assert not (out / "digits_b" / "r18" / "finetune__seed0.json").exists()
    assert read_record(out / "digits_b" / "r18" / "nc1__seed0.json")["status"] == "ok"  # finished before
    assert not list(out.rglob("*.json.tmp.*"))  # a checkpoint may be cut mid-write (SIGKILL); a record never is
    assert all(read_record(p) is not None for p in out.rglob("*.json"))  # every file there is whole
    capsys.readouterr()
    main(["status", "--results", str(out)])
    text = capsys.readouterr().out
    assert text.splitlines()[2].split() == ["finetune", "1", "0", "0", "1"]
    assert f"failed:  shard 1 as slurm task {second.job_id} (FAILED); log" in text

    assert main(argv + ["--wait", "--wait-timeout", "180"]) == 0
    assert "submitted 1 of 2 shards (1 cells to compute)" in capsys.readouterr().out
    rec = read_record(out / "digits_b" / "r18" / "finetune__seed0.json")
    assert rec["status"] == "ok"
    assert any(n.startswith("resumed at epoch") for n in rec["training"]["notes"])  # from the cancelled task's
    assert [s for s, _ in tasks(out)] == [0, 1, 1]
    assert not list(out.rglob("*.tmp.*"))  # the cut checkpoint's temp file is gone too


def test_preempted_task_is_requeued_and_resumes(tmp_path, cancel_leftovers):
    # 24 epochs: the preemption must land mid-training; 8 could finish first on a quiet machine (seen once in CI)
    data = TRAINING.format(epochs=24, digits=DIGITS)
    out, argv = setup_grid(tmp_path, data.replace("  - {name: digits_b, " + DIGITS + ", split_seed: 1}\n", ""),
                           ZOO_TINY)
    cancel_leftovers(out)
    assert main(argv) == 0
    ((_, job),) = tasks(out)
    wait_until(lambda: ckpt_epoch_files(out, "digits"), 150, "an epoch checkpoint")
    job._interrupt()  # what a preemption looks like: SIGTERM, then submitit's USR2 -> checkpoint, requeue
    wait_until(lambda: job.done(), 180, "the requeued task to finish", poll=1)
    assert state(job) == "COMPLETED" and job.result()["starts"] == 2
    rec = read_record(out / "digits" / "r18" / "finetune__seed0.json")
    assert rec["status"] == "ok" and rec["provenance"]["slurm_restart_count"] == 1
    assert any(n.startswith("resumed at epoch") for n in rec["training"]["notes"])
    assert read_record(out / "digits" / "r18" / "nc1__seed0.json")["provenance"]["slurm_restart_count"] == 0
    assert json.loads((out / ".launch" / "plan.json").read_text())["count"] == 1


def test_a_request_sbatch_refuses_is_one_line_and_exit_2(tmp_path, capsys):
    out, argv = setup_grid(tmp_path, PROXIES)
    argv = [a for a in argv if a not in ("--gpus-per-task", "0")]  # the default, one GPU: this cluster has none
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()  # sbatch's own stderr line, then ours; no traceback
    assert err.splitlines()[-1].startswith("bench: error: --launcher slurm: submission refused: sbatch: error: "
                                           "Invalid generic resource") and "Traceback" not in err
    assert not load_submissions(out)
