"""Atomic writes (temp file in the same folder + os.replace): a killed run or a second worker never sees a
half-written record, feature file or checkpoint. The temp name is unique per writer (host, pid, random): on a shared
filesystem two array tasks on different nodes can have the same pid, and two writers of one temp file would
interleave their bytes before the rename."""
from __future__ import annotations

import errno
import os
import socket
import uuid
from pathlib import Path

from .errors import DiskFull


# `<name>.tmp.<host>.<pid>.<random>`: the next run removes the temp files of writers that are gone (leftovers.py)
TEMP_NAME = r"\.tmp\.(?P<host>.+)\.(?P<pid>\d+)\.(?P<rand>[0-9a-f]{8})$"


def temp_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f"{path.name}.tmp.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}")


def is_disk_full(e: BaseException | None) -> bool:
    """ENOSPC/EDQUOT anywhere in the exception's chain: torch.save reports a full disk as a RuntimeError
    ('inline_container.cc: unexpected pos') whose context is the OSError of the file object it wrote to."""
    for _ in range(8):
        if e is None:
            return False
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
    return False


def no_space(path) -> DiskFull:
    return DiskFull(f"no space left on {Path(path).parent} (writing {Path(path).name}); free some space or point "
                    f"--out/--cache-dir at a bigger disk, then run again to resume")


def _replace(write, path) -> None:
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:  # an exception (or submitit's exit on preemption) mid-write leaves no temp file
        tmp.unlink(missing_ok=True)
        if is_disk_full(e):
            raise no_space(path) from None
        raise


def write_text(path, text: str) -> None:
    _replace(lambda tmp: tmp.write_text(text), path)


def torch_save(obj, path) -> None:
    import torch

    def save(tmp):
        with open(tmp, "wb") as f:  # a Python file object, so a full disk surfaces as OSError(ENOSPC) in the chain
            torch.save(obj, f)
    _replace(save, path)
