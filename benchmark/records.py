"""One JSON record per cell, written atomically; a valid `ok` (or `not_applicable`) record with the same config hash is skipped."""
from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
import platform
import re
import subprocess
from pathlib import Path

from .atomic import write_text
from .checks import NAME
from .errors import ConfigError
from .paths import under

STATUS_OK, STATUS_ERROR = "ok", "error"
STATUS_NA = "not_applicable"  # the cell cannot apply to this model; a final state like ok


def record_path(out: str | os.PathLike, model: str, dataset: str, protocol: str, seed: int,
                layer: str = "last") -> Path:
    """<out>/<dataset>/<model>/<protocol>__seed<k>.json, asserted under `out` (ConfigError otherwise): zoo and
    dataset names are checked when their files load, and this holds for names that come from anywhere else. A
    layer other than 'last' (the penultimate features every record had before layers existed) is named after the
    protocol: <protocol>@<layer>__seed<k>.json."""
    for kind, name in (("dataset", dataset), ("model", model), ("protocol", protocol), ("layer", layer)):
        problem = NAME.problem(name)
        if problem:
            raise ConfigError(f"{kind} name {problem}; records live at <out>/<dataset>/<model>/, so rename it")
    at = "" if layer == "last" else f"@{layer}"
    return under(out, dataset, model, f"{protocol}{at}__seed{int(seed)}.json", what="record path")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return _jsonable(obj.item())
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def write_record(path: Path, record: dict) -> None:
    write_text(path, json.dumps(_jsonable(record), indent=1, sort_keys=True))


def read_record(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def is_done(path: Path, config_hash: str, rec: dict | None = None) -> bool:
    """A valid final record with this config hash (`rec`: the record already read from `path`). An `ok` record
    holding a null metric (a NaN written before NaN metrics became errors: `_jsonable` stores NaN as null) is not
    valid, so a rerun recomputes it."""
    rec = read_record(path) if rec is None else rec
    if not rec or rec.get("config_hash") != config_hash or rec.get("status") not in (STATUS_OK, STATUS_NA):
        return False
    values = [x for v in (rec.get("metrics") or {}).values() for x in (v if isinstance(v, list) else [v])]
    return rec["status"] != STATUS_OK or all(x is not None for x in values)


RECORD_KEYS = {"model", "dataset", "protocol", "status"}
_RECORD_NAME = re.compile(r"^(?P<protocol>[^@]+?)(?:@(?P<layer>.+))?__seed(?P<seed>\d+)\.json$")


def iter_records(root: str | os.PathLike, corrupt: list | None = None):
    """(path, record) of every readable record; files in a record's place that are not one (truncated, edited,
    not JSON) are appended to `corrupt` as (path, {model, dataset, protocol, seed}, reason) when it is given."""
    root = Path(root)
    for path in sorted(root.rglob("*.json")):
        rec = read_record(path)
        # other JSON may live beside the records (e.g. the launcher's plan and submissions list under .launch/)
        if isinstance(rec, dict) and RECORD_KEYS <= set(rec):
            yield path, rec
        elif corrupt is not None:
            parts, m = path.relative_to(root).parts, _RECORD_NAME.match(path.name)
            if len(parts) == 3 and m:  # <dataset>/<model>/<protocol>__seed<k>.json, as record_path writes
                reason = "not valid JSON" if rec is None else f"lacks {sorted(RECORD_KEYS - set(rec or {}))}"
                corrupt.append((path, {"dataset": parts[0], "model": parts[1], "protocol": m["protocol"],
                                       "seed": int(m["seed"]), "layer": m["layer"] or "last"}, reason))


@functools.lru_cache(maxsize=1)
def provenance_static() -> dict:
    import timm
    import torch

    from . import __version__
    sha = None
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"bench_version": __version__, "git_sha": sha, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version(), "host": platform.node()}


def cluster_provenance(device: str) -> dict:
    """Where a cell ran: SLURM job, array task and node (from the variables sbatch sets), and the GPU's name."""
    env, out = os.environ, {}
    if env.get("SLURM_JOB_ID"):
        out.update(slurm_job_id=env.get("SLURM_ARRAY_JOB_ID") or env["SLURM_JOB_ID"],
                   slurm_array_task_id=env.get("SLURM_ARRAY_TASK_ID"),
                   slurm_node=env.get("SLURMD_NODENAME") or platform.node(),
                   slurm_restart_count=int(env.get("SLURM_RESTART_COUNT") or 0))  # > 0 after a requeue
    if str(device).startswith("cuda"):
        import torch
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def provenance(device: str, wall_time_s: float) -> dict:
    return {**provenance_static(), "device": device, "wall_time_s": round(wall_time_s, 3),
            "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **cluster_provenance(device)}
