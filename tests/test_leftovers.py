"""What killed runs leave behind is cleaned by the next run; cells another run held are taken over when it dies."""
import json
import os
import socket
import subprocess
import sys

import pytest

from benchmark.runner import RunOptions, run_grid

DEAD_PID = 4194305  # above Linux's PID_MAX_LIMIT (2**22): never a running process


pytestmark = pytest.mark.usefixtures("one_thread")


def claim(path, pid):
    path.with_suffix(".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "token": f"t{pid}"}))


def test_next_run_removes_dead_writers_temps_and_finished_cells_claims(tiny_knn_grid):
    zoo, dsets, out = tiny_knn_grid
    assert run_grid(zoo, dsets, RunOptions(out=str(out)), log=lambda *_: None).ok == 2
    rec = out / "digits/r/knn__seed0.json"
    host = socket.gethostname()
    claim(rec, DEAD_PID)  # killed between the record's rename and the claim's release
    (out / "digits/r/nc1__seed0.ckpt").mkdir()  # killed after the record, before the folder's removal
    (out / "digits/r/nc1__seed0.ckpt/best.pt").write_bytes(b"x")
    pixels = next((out / ".cache/pixels").glob("*.npy"))
    dead = [rec.with_name(f"knn__seed0.json.tmp.{host}.{DEAD_PID}.0123abcd"),
            out / f".cache/abc.pt.tmp.{host}.{DEAD_PID}.deadbeef",
            pixels.with_name(f"{pixels.name}.tmp.{host}.{DEAD_PID}.00ff00ff"),
            out / f"plan.json.tmp.{host}.{DEAD_PID}.12345678"]
    alive = [out / f".cache/live.pt.tmp.{host}.{os.getpid()}.abcdef01",  # a writer at work
             out / ".cache/other.pt.tmp.node-7.cluster.42.abcdef02"]  # another host's, recently written
    for p in dead + alive:
        p.write_bytes(b"\0" * 100)
    logs = []
    s = run_grid(zoo, dsets, RunOptions(out=str(out)), log=logs.append)
    assert (s.ok, s.skipped) == (0, 2)
    assert [p.exists() for p in dead] == [False] * 4 and all(p.exists() for p in alive)
    assert not rec.with_suffix(".lock").exists() and not (out / "digits/r/nc1__seed0.ckpt").exists()
    assert any("removed 4 temp file(s)" in m for m in logs)


def test_live_claim_is_left_alone_on_a_finished_cell(tiny_knn_grid):
    zoo, dsets, out = tiny_knn_grid
    run_grid(zoo, dsets, RunOptions(out=str(out)), log=lambda *_: None)
    rec = out / "digits/r/knn__seed0.json"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim(rec, live.pid)  # e.g. a --force rerun at work
        run_grid(zoo, dsets, RunOptions(out=str(out)), log=lambda *_: None)
        assert rec.with_suffix(".lock").exists()
    finally:
        live.kill()
        live.wait()


def test_busy_cells_are_rechecked_and_taken_over_when_their_owner_dies(tiny_knn_grid):
    zoo, dsets, out = tiny_knn_grid
    rec = out / "digits/r/knn__seed0.json"
    rec.parent.mkdir(parents=True)
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim(rec, owner.pid)
        s = run_grid(zoo, dsets, RunOptions(out=str(out)), log=lambda *_: None)
        assert [c.protocol for c in s.busy] == ["knn"] and s.ok == 1 and not rec.exists()  # still alive: left

        logs = []

        def log(msg):  # the other run dies while this one works on the rest of the grid
            logs.append(msg)
            if msg.startswith("[busy]"):
                owner.kill()
                owner.wait()
        s = run_grid(zoo, dsets, RunOptions(out=str(out)), log=log)
    finally:
        owner.kill()
        owner.wait()
    assert s.busy == [] and s.ok == 1 and json.loads(rec.read_text())["status"] == "ok"
    assert any("took over" in m for m in logs) and not rec.with_suffix(".lock").exists()
