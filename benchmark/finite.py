"""The NaN policy: a metric that is NaN or ±inf never lands in an `ok` record. Each proxy that can be undefined
(dead or constant features) defines its value or raises a CellError saying why; `check_finite` is the net the grid
runner puts under every cell, proxy or training, before it writes an `ok` record."""
from __future__ import annotations

import numpy as np

from .errors import CellError


def non_finite(metrics: dict) -> list[str]:
    """'name = value' for every NaN/±inf number among the metrics (lists of numbers included)."""
    bad = []
    for k, v in metrics.items():
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool) \
                    and not np.isfinite(x):
                bad.append(f"{k} = {x}")
                break
    return bad


def check_finite(c, metrics: dict, health: dict | None) -> None:
    """A NaN/inf metric is never an `ok` result: the cell becomes an error naming the metric. Proxies that can
    be undefined raise their own clearer CellError first; this is the net under all of them."""
    bad = non_finite(metrics)
    if bad:
        dead = ""
        if health and (health["dead_columns"] or health["constant_columns"]):
            dead = (f"; the train features have {health['dead_columns']}/{health['dim']} all-zero and "
                    f"{health['constant_columns']}/{health['dim']} constant columns")
        raise CellError(f"{c.protocol}: {', '.join(bad)} is not a finite number{dead}; a degenerate value is "
                        f"recorded as an error, not as ok")
