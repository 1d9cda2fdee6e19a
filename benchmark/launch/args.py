"""Command-line flags of the launchers and `bench status`, and the typed SLURM request they become."""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field

from ..errors import ConfigError

LAUNCHERS = ("none", "local", "slurm")


@dataclass
class SlurmOptions:
    partition: str | None = None  # --partition; None = the cluster's default partition
    gpus_per_task: int = 1  # GPUs per array task: one shard per GPU; 0 for CPU-only tasks
    cpus_per_task: int = 8  # CPU cores per task (data loading, proxies); torch uses this many threads
    mem: str = "32G"  # memory per task, sbatch --mem syntax
    time_min: int = 24 * 60  # wall-clock limit per task; a task that reaches it is requeued and resumes
    account: str | None = None  # --account to charge
    qos: str | None = None  # --qos
    constraint: str | None = None  # --constraint, e.g. a GPU model feature such as "a100"
    array_parallelism: int = 64  # at most this many tasks at once (local launcher: at once on this machine)
    extra: dict = field(default_factory=dict)  # --slurm-arg KEY=VALUE, passed to sbatch as --KEY=VALUE


def _minutes(s: str) -> int:
    """sbatch --time forms: MM, HH:MM:SS, D-HH:MM, D-HH:MM:SS (and MM:SS) -> whole minutes."""
    try:
        days, _, rest = s.rpartition("-")
        parts = [int(p) for p in rest.split(":")]
        if len(parts) == 1:
            h, m, sec = (parts[0], 0, 0) if days else (0, parts[0], 0)
        elif len(parts) == 2:
            h, m, sec = (parts[0], parts[1], 0) if days else (0, parts[0], parts[1])
        elif len(parts) == 3:
            h, m, sec = parts
        else:
            raise ValueError
        total = (int(days or 0) * 24 + h) * 60 + m + (1 if sec else 0)
        if total <= 0:
            raise ValueError
        return total
    except ValueError:
        raise argparse.ArgumentTypeError(f"--time wants MINUTES, HH:MM:SS or D-HH:MM:SS, got '{s}'") from None


def _key_value(s: str) -> tuple[str, str]:
    key, eq, value = s.partition("=")
    key = key.strip().lstrip("-")
    if not key or not eq:
        raise argparse.ArgumentTypeError(f"--slurm-arg wants KEY=VALUE (e.g. gres=gpu:a100:1), got '{s}'")
    return key, value


def _positive(s: str) -> int:
    try:
        v = int(s)
        assert v > 0
        return v
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError(f"wants a positive integer, got '{s}'") from None


def _seconds(s: str) -> float:
    """--wait-timeout: a finite number of seconds >= 0."""
    try:
        v = float(s)
        assert math.isfinite(v) and v >= 0
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError(f"wants a number of seconds >= 0, got '{s}'") from None
    return v


def add_launch_args(p: argparse.ArgumentParser) -> None:
    d = SlurmOptions()
    g = p.add_argument_group("launching (through submitit)")
    g.add_argument("--launcher", choices=LAUNCHERS, default="none",
                   help="none: run here (default); local: shards as local processes; slurm: one SLURM job array")
    g.add_argument("--num-shards", type=_positive, default=None,
                   help="array tasks (default: one per (model, dataset) group)")
    g.add_argument("--wait", action="store_true",
                   help="stay attached: progress bar over finished cells and task states (local always waits)")
    g.add_argument("--wait-timeout", type=_seconds, default=None,
                   help="stop waiting after this many seconds (>= 0; default: wait until every task ends)")
    g.add_argument("--partition", default=d.partition)
    g.add_argument("--gpus-per-task", type=int, default=d.gpus_per_task, help=f"default {d.gpus_per_task}")
    g.add_argument("--cpus-per-task", type=_positive, default=d.cpus_per_task, help=f"default {d.cpus_per_task}")
    g.add_argument("--mem", default=d.mem, help=f"memory per task (default {d.mem})")
    g.add_argument("--time", type=_minutes, default=d.time_min, dest="time_min",
                   help="time limit per task, MINUTES or HH:MM:SS (default 24:00:00); timed-out tasks are requeued")
    g.add_argument("--account", default=d.account)
    g.add_argument("--qos", default=d.qos)
    g.add_argument("--constraint", default=d.constraint)
    g.add_argument("--array-parallelism", type=_positive, default=d.array_parallelism,
                   help=f"at most this many tasks at once (default {d.array_parallelism})")
    g.add_argument("--slurm-arg", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, repeatable (e.g. --slurm-arg gres=gpu:a100:1)")


def slurm_options(args) -> SlurmOptions:
    if args.gpus_per_task < 0:
        raise ConfigError(f"--gpus-per-task must be >= 0, got {args.gpus_per_task}")
    return SlurmOptions(partition=args.partition, gpus_per_task=args.gpus_per_task, cpus_per_task=args.cpus_per_task,
                        mem=args.mem, time_min=args.time_min, account=args.account, qos=args.qos,
                        constraint=args.constraint, array_parallelism=args.array_parallelism,
                        extra=dict(args.slurm_arg))


def add_status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="the --out of `bench run`")
    p.add_argument("--errors", type=int, default=20, help="show the last error of at most this many failed cells")
