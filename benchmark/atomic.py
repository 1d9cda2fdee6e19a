"""Atomic writes (temp file in the same folder + os.replace): a killed run or a second worker never sees a
half-written record, feature file or checkpoint. The temp name is unique per writer (host, pid, random): on a shared
filesystem two array tasks on different nodes can have the same pid, and two writers of one temp file would
interleave their bytes before the rename."""
from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path


def _tmp(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f"{path.name}.tmp.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}")


def _replace(write, path) -> None:
    path = Path(path)
    tmp = _tmp(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:  # an exception (or submitit's exit on preemption) mid-write leaves no temp file behind
        tmp.unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    _replace(lambda tmp: tmp.write_text(text), path)


def torch_save(obj, path) -> None:
    import torch
    _replace(lambda tmp: torch.save(obj, tmp), path)
