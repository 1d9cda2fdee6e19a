"""Every random draw of a cell comes from seeds derived from (config seed, cell identity), so the same config and
seed give the same numbers in any process, shard, order of cells or resume."""
from __future__ import annotations

import hashlib
import random

import numpy as np


def derive_seed(*parts) -> int:
    """A stable 63-bit seed from any printable parts (Python's hash() is salted per process, so not that)."""
    blob = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") >> 1


def seed_everything(seed: int) -> None:
    """Python's `random` (timm's transforms), NumPy's global state and torch's CPU and CUDA generators."""
    import torch
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)  # also seeds every CUDA device


def cell_seed(seed: int, model: str, dataset: str, protocol: str) -> int:
    return derive_seed("cell", seed, model, dataset, protocol)
