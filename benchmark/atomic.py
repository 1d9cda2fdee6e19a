"""Atomic writes (temp file in the same folder + os.replace): a killed run or a second worker never sees a
half-written record, feature file or checkpoint. The temp name carries the pid so concurrent shards don't collide."""
from __future__ import annotations

import os
from pathlib import Path


def _tmp(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


def write_text(path, text: str) -> None:
    path = Path(path)
    tmp = _tmp(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def torch_save(obj, path) -> None:
    import torch
    path = Path(path)
    tmp = _tmp(path)
    torch.save(obj, tmp)
    os.replace(tmp, path)
