"""What killed runs leave behind, cleaned by the next run: temp files of dead writers, and the claim and
checkpoint folder of a cell whose record was written just before the kill."""
from __future__ import annotations

import re
import shutil
import socket
import time
from pathlib import Path

from .atomic import TEMP_NAME
from .locks import STALE_AFTER_S, CellLock, _alive


def _dead_writer(path: Path, host: str, pid: int) -> bool:
    if host == socket.gethostname():
        return not _alive(pid)
    try:  # another host's writer: gone when the file has not changed for as long as a claim may go unrefreshed
        return time.time() - path.stat().st_mtime > STALE_AFTER_S
    except FileNotFoundError:
        return False


def remove_dead_temps(*roots, log=print) -> int:
    """Delete `<name>.tmp.<host>.<pid>.<random>` files (records, plan, features, heads, pixel store, training
    checkpoints) whose writer is no longer running; returns how many were removed."""
    removed, freed = 0, 0
    roots = {Path(r).resolve() for r in roots if r is not None}
    for root in [r for r in roots if not any(o != r and o in r.parents for o in roots)]:  # the cache may be in out
        if not root.is_dir():
            continue
        for path in root.rglob("*.tmp.*"):
            m = re.search(TEMP_NAME, path.name)
            if not m or not path.is_file() or not _dead_writer(path, m["host"], int(m["pid"])):
                continue
            try:
                size = path.stat().st_blocks * 512  # a sparse memmap's real size, not its length
                path.unlink()
            except FileNotFoundError:
                continue
            removed, freed = removed + 1, freed + size
    if removed:
        log(f"        removed {removed} temp file(s) of killed writers ({freed / 2**20:.1f} MiB)")
    return removed


def tidy_finished_cell(record_path: Path) -> None:
    """A cell with a valid record: a claim left by a kill between the record's rename and the claim's release is
    removed (only when its owner is gone), and so is the checkpoint folder a kill kept from being deleted."""
    ckpt = record_path.with_suffix(".ckpt")
    if not (record_path.with_suffix(".lock").exists() or ckpt.exists()):
        return
    lock = CellLock(record_path)
    if lock.acquire():  # breaks a dead owner's claim; a live one (e.g. a --force rerun) keeps both
        try:
            shutil.rmtree(ckpt, ignore_errors=True)
        finally:
            lock.release()
