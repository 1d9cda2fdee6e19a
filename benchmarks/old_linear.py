"""Today's linear probe (commit 2864ef7, before issue 18), loaded from git for side-by-side timing in one run."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import benchmark.proxies.base as base

OLD_COMMIT = "2864ef7"


def load_old_linear(commit: str = OLD_COMMIT):
    """The module `benchmark/proxies/linear.py` as of `commit`, importable beside today's (its proxy is not
    registered: the registry keeps today's 'linear')."""
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "show", f"{commit}:benchmark/proxies/linear.py"], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    name = f"benchmark.proxies._linear_{commit}"
    spec = importlib.util.spec_from_loader(name, loader=None)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "benchmark.proxies"
    real = base.register_proxy
    base.register_proxy = lambda *a, **k: (lambda fn: fn)  # no second 'linear' in the registry
    try:
        exec(compile(src, f"{commit}:benchmark/proxies/linear.py", "exec"), mod.__dict__)
    finally:
        base.register_proxy = real
    sys.modules[name] = mod
    return mod
