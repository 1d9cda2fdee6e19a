"""The callable one array task runs: `run_grid` on one shard. It is submitit-Checkpointable, and its checkpoint is
simply itself: a preempted or timed-out task is requeued and calls `run_grid` again, which skips cells with valid
records and resumes training cells from their per-epoch checkpoints. No state beyond the results directory."""
from __future__ import annotations

import os

import submitit


class ShardTask(submitit.helpers.Checkpointable):
    def __init__(self, zoo, dsets, opts, gpus: int = 0):
        self.zoo, self.dsets, self.opts, self.gpus = zoo, dsets, opts, gpus
        self.starts = 0  # incremented on every (re)start; pickled with the checkpoint, so it counts requeues

    def __call__(self) -> dict:
        import torch

        from ..runner import run_grid
        self.starts += 1
        # Without cgroup CPU binding torch would start one thread per core of the node and oversubscribe it.
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:
            torch.set_num_threads(int(cpus))
        opts = self.opts
        if self.starts > 1:  # a requeued --force task keeps what it already recomputed before preemption
            opts.force = False
        if self.gpus and torch.cuda.is_available():
            opts.device = "cuda"
        index, count = opts.shard
        print(f"shard {index}/{count}, start {self.starts}, device {opts.device}", flush=True)
        s = run_grid(self.zoo, self.dsets, opts, log=lambda m: print(m, flush=True))
        return {"shard": index, "ok": s.ok, "skipped": s.skipped, "starts": self.starts,
                "errors": [[c.model, c.dataset, c.protocol, c.seed, msg] for c, msg in s.errors]}
