"""Launchers: run a grid's shards in-process (`none`), as local processes (`local`) or as one SLURM job array
(`slurm`), all through submitit. One small interface (submit shards, wait, status); `runner.run_grid` on one shard
stays the unit a task runs. Nothing heavy is imported here, so `bench --help` stays fast."""
from __future__ import annotations

from .args import SlurmOptions, add_launch_args, add_status_args, slurm_options

__all__ = ["SlurmOptions", "add_launch_args", "add_status_args", "slurm_options"]
