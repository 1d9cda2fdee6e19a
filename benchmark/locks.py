"""Advisory per-cell claims, so two runs on one results folder split the work instead of duplicating it.

A claim is a file created with O_CREAT | O_EXCL (atomic on local and NFSv3+ filesystems) holding the owner's
host, pid and a token. A claim is broken when its owner is gone: on the same host when the pid no longer runs,
from another host when the file has not been refreshed for `stale_after` seconds (owners refresh it while they
work). Breaking renames the file first, so two processes cannot both break and both claim.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from pathlib import Path

from .atomic import is_disk_full, no_space

STALE_AFTER_S = 6 * 3600.0  # other hosts' claims older than this (no refresh) are considered abandoned


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path):
    """(owner dict or None, identity) of a claim file, read through one descriptor so both describe the same file;
    identity is the owner's token, or inode+mtime for a file without one (garbage, or still being written)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        raw = os.read(fd, 65536)
    finally:
        os.close(fd)
    try:
        owner = json.loads(raw)
        owner = owner if isinstance(owner, dict) else None
    except ValueError:
        owner = None
    token = (owner or {}).get("token")
    return owner, (str(token) if token else f"x{st.st_ino}-{st.st_mtime_ns}"), st.st_mtime


def _is_stale(owner, mtime: float, stale_after: float) -> bool:
    age = time.time() - mtime
    if owner is None:  # being written right now, or garbage: only old garbage is stale
        return age > 60
    if owner.get("host") == socket.gethostname():
        return not _alive(int(owner.get("pid", -1)))
    return age > stale_after


def _create(path: Path, token: str) -> bool:
    """O_EXCL-create `path` holding this process's claim; False when it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except OSError as e:
        if is_disk_full(e):
            raise no_space(path) from None
        raise
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "token": token, "since": time.time()}, f)
    except OSError as e:  # an empty claim would block the cell for a minute: none at all
        path.unlink(missing_ok=True)
        if is_disk_full(e):
            raise no_space(path) from None
        raise
    return True


def break_if_stale(path: Path, stale_after: float = STALE_AFTER_S, depth: int = 0) -> bool:
    """Remove the claim file `path` if its owner is gone, exactly once across racing processes; True when it
    is gone (removed here or by someone else), False when a live owner holds it or another breaker is at work."""
    try:
        owner, ident, mtime = _read(path)
    except FileNotFoundError:
        return True
    if not _is_stale(owner, mtime, stale_after):
        return False
    guard = path.with_name(f"{path.name}.break-{ident}")
    token = uuid.uuid4().hex
    if not _create(guard, token):
        # Another breaker of this very claim is at work (milliseconds), or died in that window: break its guard.
        if depth >= 2 or not break_if_stale(guard, 60.0, depth + 1) or not _create(guard, token):
            return False
    try:
        try:
            now = _read(path)[1]
        except FileNotFoundError:
            return True
        if now != ident:  # the claim changed hands since we looked: a live one, not ours to break
            return False
        path.unlink()  # only a holder of this claim's guard may remove it, and that is us
        return True
    finally:
        guard.unlink(missing_ok=True)


class CellLock:
    def __init__(self, record_path: str | os.PathLike, stale_after: float = STALE_AFTER_S):
        self.path = Path(record_path).with_suffix(".lock")
        self.stale_after = stale_after
        self.token = uuid.uuid4().hex
        self.held = False

    def owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if _create(self.path, self.token):
                self.held = True
                return True
            if not break_if_stale(self.path, self.stale_after):
                return False
        return False

    def break_stale(self) -> bool:
        """Remove this lock's file if its owner is gone (e.g. a finished cell's claim left by a kill)."""
        return not self.path.exists() or break_if_stale(self.path, self.stale_after)

    def refresh(self) -> None:
        if self.held:
            try:
                os.utime(self.path)
            except FileNotFoundError:
                pass

    def release(self) -> None:
        if self.held and (self.owner() or {}).get("token") == self.token:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


@contextlib.contextmanager
def claimed(path: str | os.PathLike, on_wait=None, stale_after: float = STALE_AFTER_S):
    """Hold the claim `<path minus suffix>.lock` for the block, waiting while another live process holds it (or
    taking it over when that one dies): used so concurrent runs extract each feature split once. `on_wait` is
    called once if we have to wait."""
    lock, delay = CellLock(path, stale_after), 0.1
    while not lock.acquire():
        if on_wait is not None:
            on_wait(lock.owner() or {})
            on_wait = None
        time.sleep(delay)
        delay = min(delay * 1.5, 5.0)
    try:
        yield lock
    finally:
        lock.release()
