"""Advisory per-cell claims, so two runs on one results folder split the work instead of duplicating it.

A claim is a file created with O_CREAT | O_EXCL (atomic on local and NFSv3+ filesystems) holding the owner's
host, pid and a token. A claim is broken when its owner is gone: on the same host when the pid no longer runs,
from another host when the file has not been refreshed for `stale_after` seconds (owners refresh it while they
work). Breaking renames the file first, so two processes cannot both break and both claim.
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

STALE_AFTER_S = 6 * 3600.0  # other hosts' claims older than this (no refresh) are considered abandoned


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    def _stale(self) -> bool:
        owner = self.owner()
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        if owner is None:  # being written right now, or garbage: only old garbage is stale
            return age > 60
        if owner.get("host") == socket.gethostname():
            return not _alive(int(owner.get("pid", -1)))
        return age > self.stale_after

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale():
                    return False
                broken = self.path.with_name(f"{self.path.name}.broken{os.getpid()}")
                try:
                    os.rename(self.path, broken)  # only one breaker succeeds
                    os.unlink(broken)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                           "since": time.time()}, f)
            self.held = True
            return True
        return False

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
