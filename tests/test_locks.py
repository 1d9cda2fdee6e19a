"""Cell claims: breaking a dead owner's claim is exact under races (issue 20: two holders in 61 of 200 trials)."""
import json
import multiprocessing as mp
import os
import socket
import sys
import uuid

import pytest

from benchmark.locks import CellLock

DEAD_PID = 4194305  # above Linux's PID_MAX_LIMIT (2**22): never a running process


def write_stale(lock_path):
    lock_path.write_text(json.dumps({"host": socket.gethostname(), "pid": DEAD_PID, "token": uuid.uuid4().hex,
                                     "since": 0}))


def _racer(i, record, barrier, wins, trials, n):
    import random
    import time
    from pathlib import Path

    from benchmark import locks
    real_alive, rng = locks._alive, random.Random(i)

    def slow_alive(pid):  # adversarial scheduling: a breaker may stall between reading a claim and acting on it
        time.sleep(rng.random() * 0.002)
        return real_alive(pid)
    locks._alive = slow_alive
    lock_path = Path(record).with_suffix(".lock")
    for t in range(trials):
        if i == 0:
            write_stale(lock_path)
        barrier.wait()  # a dead owner's claim is in place
        lock = CellLock(record)
        got = lock.acquire()
        wins[t * n + i] = int(got)
        barrier.wait()  # everyone has tried while the winner still holds it
        if got:
            lock.release()
        barrier.wait()  # released: the next trial starts from a clean folder


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method and Linux pid numbering")
def test_many_processes_racing_on_one_stale_lock_never_both_hold_it(tmp_path):
    n, trials = 6, 250
    ctx = mp.get_context("fork")  # cheap workers; they import nothing new
    barrier, wins = ctx.Barrier(n), ctx.Array("b", n * trials, lock=False)
    record = str(tmp_path / "cell.json")
    procs = [ctx.Process(target=_racer, args=(i, record, barrier, wins, trials, n)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * n
    holders = [sum(wins[t * n:(t + 1) * n]) for t in range(trials)]
    assert max(holders) == 1, f"{sum(h > 1 for h in holders)} of {trials} trials had two or more holders"
    assert min(holders) == 1  # and the dead owner's claim was always taken over
    assert sorted(os.listdir(tmp_path)) == []  # no claim, guard or temp file left behind


def test_claim_of_a_live_owner_is_not_broken_and_garbage_only_when_old(tmp_path):
    record = tmp_path / "c.json"
    first, second = CellLock(record), CellLock(record)
    assert first.acquire() and not second.acquire()  # this process is alive: its claim holds
    first.release()
    (tmp_path / "c.lock").write_text("{half-writ")  # a claim being written, or garbage
    assert not second.acquire()
    os.utime(tmp_path / "c.lock", (0, 0))  # old garbage
    assert second.acquire()
    second.release()
    write_stale(tmp_path / "c.lock")
    assert CellLock(record).break_stale() and not (tmp_path / "c.lock").exists()
