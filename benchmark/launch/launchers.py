"""The launcher interface: submit shard tasks, reattach to a task by id, tell its state. Both kinds are submitit
executors (`local`: processes on this machine, `slurm`: one sbatch job array); `none` never gets here."""
from __future__ import annotations

import os
import pickle
import shlex
import shutil
from pathlib import Path

from ..errors import ConfigError
from ..registry import Registry
from .args import SlurmOptions
from .plan import job_folder

LAUNCHERS: Registry = Registry("launcher")
# sacct/squeue states in which a task still holds (or waits for) resources: its shard must not be submitted twice.
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
          "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED", "UNKNOWN"}


def package_root() -> str:
    """The directory holding the `benchmark` package this process runs, so tasks import the same code."""
    return str(Path(__file__).resolve().parents[2])


class Launcher:
    cluster = ""

    def __init__(self, out, slurm: SlurmOptions):
        self.out, self.slurm = Path(out), slurm
        self.folder = job_folder(out)

    def executor(self):
        import submitit
        ex = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        ex.update_parameters(timeout_min=self.slurm.time_min, name="bench", **self.parameters())
        return ex

    def parameters(self) -> dict:
        return {}

    def submit(self, tasks: list) -> list:
        """Submit one job per task (ShardTask); returns the submitit jobs of the tasks started, in order."""
        raise NotImplementedError

    def job(self, job_id: str):
        raise NotImplementedError

    def state(self, job) -> str:
        """Upper-case state: the scheduler's (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ...), except that a
        finished task whose callable raised is FAILED whatever the scheduler says."""
        outcome = result_of(job)
        if outcome is not None:
            return "COMPLETED" if outcome[0] == "success" else "FAILED"
        return str(job.state).split()[0].upper()


def result_of(job):
    """submitit's result pickle ("success", value) / ("error", traceback), or None while there is none."""
    path = job.paths.result_pickle
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception:  # noqa: BLE001 - being written right now: not finished yet
        return None


@LAUNCHERS.register("slurm")
class SlurmLauncher(Launcher):
    cluster = "slurm"

    def parameters(self) -> dict:
        s = self.slurm
        if shutil.which("sbatch") is None or shutil.which("srun") is None:
            raise ConfigError("--launcher slurm: sbatch/srun not found on PATH; run on a SLURM login node or use "
                              "--launcher local")
        params = {"cpus_per_task": s.cpus_per_task, "slurm_mem": s.mem,
                  "slurm_array_parallelism": s.array_parallelism,
                  # sbatch passes the environment on by default; the setup line also covers SBATCH_EXPORT=NONE.
                  "slurm_setup": [f"export PYTHONPATH={shlex.quote(package_root())}${{PYTHONPATH:+:$PYTHONPATH}}"]}
        if s.gpus_per_task:
            params["slurm_gpus_per_task"] = s.gpus_per_task
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(s, key):
                params[f"slurm_{key}"] = getattr(s, key)
        if s.extra:
            params["slurm_additional_parameters"] = dict(s.extra)
        return params

    def submit(self, tasks: list) -> list:
        return self.executor().submit_array(tasks)  # one sbatch call, one array job

    def job(self, job_id: str):
        import submitit
        return submitit.SlurmJob(folder=self.folder, job_id=job_id)


@LAUNCHERS.register("local")
class LocalLauncher(Launcher):
    """No scheduler: each shard is a process on this machine. At most `array_parallelism` run at once, so the
    submitting process keeps the queue (local always waits)."""
    cluster = "local"

    def __init__(self, out, slurm):
        super().__init__(out, slurm)
        self._queue: list = []

    def submit(self, tasks: list) -> list:
        same_machine_env()
        ex = self.executor()
        self._queue = [(ex, t) for t in tasks[self.slurm.array_parallelism:]]
        return [ex.submit(t) for t in tasks[: self.slurm.array_parallelism]]

    def pump(self, jobs: list) -> list:
        """Start queued tasks while fewer than array_parallelism run; returns the newly started jobs."""
        running = sum(not j.done() for j in jobs)
        started = []
        while self._queue and running < self.slurm.array_parallelism:
            ex, t = self._queue.pop(0)
            started.append(ex.submit(t))
            running += 1
        return started

    @property
    def queued(self) -> int:
        return len(self._queue)

    def job(self, job_id: str):
        import submitit
        return submitit.LocalJob(folder=self.folder, job_id=job_id)

    def state(self, job) -> str:
        if result_of(job) is None and job._process is None:  # submitted by another process: its job id is a pid
            try:
                os.kill(int(job.job_id), 0)
                return "RUNNING"
            except (OSError, ValueError):
                return "INTERRUPTED"  # gone without a result: killed
        return super().state(job)


def make_launcher(name: str, out, slurm: SlurmOptions) -> Launcher:
    return LAUNCHERS.get(name, "--launcher")(out, slurm)


def same_machine_env() -> None:
    """Local tasks inherit this process's environment; make them import this process's `benchmark`."""
    root = package_root()
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root] + [p for p in paths if p])
