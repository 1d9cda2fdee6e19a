"""`bench run --launcher local|slurm` (submit the shards that still have work, optionally wait with a progress bar)
and `bench status` (cells per protocol and state, array tasks, last errors)."""
from __future__ import annotations

import dataclasses
import sys
import time
from collections import Counter

from ..errors import ConfigError
from ..records import record_path
from .args import slurm_options
from .plan import (DONE, FAILED, MISSING, NOT_APPLICABLE, STATES, add_submission, by_protocol, cell_state, cell_states,
                   job_folder, latest_tasks, load_plan, make_plan, save_plan, shards_to_run)

POLL_S = 2.0  # records and sacct are read this often while waiting
ENDED_BADLY = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
               "INTERRUPTED"}


def record_plan(zoo, dsets, opts) -> None:
    """In-process runs (`--launcher none`) leave the plan too, so `bench status` works for them."""
    save_plan(opts.out, make_plan(zoo, dsets, dataclasses.replace(opts, shard=(0, 1)), opts.shard[1]))


def launch_grid(args, zoo, dsets, opts) -> int:
    from .launchers import ACTIVE, make_launcher
    from .task import ShardTask
    if opts.shard != (0, 1):
        raise ConfigError("--shard is for running one share in-process; with --launcher use --num-shards")
    slurm = slurm_options(args)
    launcher = make_launcher(args.launcher, opts.out, slurm)
    plan = make_plan(zoo, dsets, opts, args.num_shards)
    save_plan(opts.out, plan)
    states = cell_states(opts.out, plan)
    shards = sorted({c["shard"] for c in plan["cells"]}) if opts.force else shards_to_run(states)
    busy = {}
    if args.launcher == "slurm":  # a shard whose task is still queued or running is not submitted twice
        for shard, (name, job_id) in latest_tasks(opts.out).items():
            if shard in shards and name == "slurm" and launcher.state(launcher.job(job_id)) in ACTIVE:
                busy[shard] = job_id
    for shard, job_id in busy.items():
        print(f"shard {shard}: task {job_id} is still queued or running; not submitted again")
    shards = [s for s in shards if s not in busy]
    attached = [(launcher.job(job_id), shard) for shard, job_id in busy.items()] if args.wait else []
    if not shards:
        print(f"nothing to submit: {len(plan['cells'])} cells planned, all finished or in flight "
              f"(bench status --results {opts.out})")
        return wait(launcher, attached, plan, opts.out, sorted(busy), args.wait_timeout) if attached else 0
    tasks = [ShardTask(zoo, dsets, dataclasses.replace(opts, shard=(s, plan["count"])),
                       slurm.gpus_per_task if args.launcher == "slurm" else 0) for s in shards]
    try:
        jobs = launcher.submit(tasks)
    except Exception as e:  # noqa: BLE001 - sbatch refusing the request is a flag problem: one line, exit 2
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else type(e).__name__)
        raise ConfigError(f"--launcher {args.launcher}: submission refused: {why}; check the SLURM flags "
                          f"(--partition, --gpus-per-task, --mem, --slurm-arg ...)") from None
    pairs = list(zip(jobs, shards))
    add_submission(opts.out, args.launcher, [(j.job_id, s) for j, s in pairs])
    todo = sum(c["shard"] in shards and (opts.force or st in (MISSING, FAILED)) for c, st, _ in states)
    array = jobs[0].job_id.split("_")[0]
    print(f"submitted {len(shards)} of {plan['count']} shards ({todo} cells to compute) through {args.launcher}"
          + (f" as array job {array}" if args.launcher == "slurm" else "")
          + f"; logs in {job_folder(opts.out).parent}")
    if args.launcher == "slurm" and not args.wait:
        print(f"follow with: bench status --results {opts.out}   (or squeue -j {array}, sacct -j {array})")
        return 0
    return wait(launcher, pairs + attached, plan, opts.out, sorted(shards + [s for _, s in attached]),
                args.wait_timeout)


def wait(launcher, pairs, plan, out, shards, timeout=None) -> int:
    """Progress bar over finished cells of the submitted shards, task states as its postfix; bounded by timeout."""
    from tqdm import tqdm
    cells = [c for c in plan["cells"] if c["shard"] in shards]
    t_submit = time.time()
    bar = tqdm(total=len(cells), desc="cells finished", unit="cell", disable=None)
    t0 = time.monotonic()
    try:
        while True:
            for job in getattr(launcher, "pump", lambda _: [])([j for j, _ in pairs]):
                pairs.append((job, job.submission().function.opts.shard[0]))
                add_submission(out, "local", [(job.job_id, pairs[-1][1])])
            bar.n = sum(_finished(out, c, t_submit) for c in cells)
            states = Counter(launcher.state(j) for j, _ in pairs)
            bar.set_postfix_str(" ".join(f"{k.lower()}={v}" for k, v in sorted(states.items())))
            bar.refresh()
            if all(j.done() for j, _ in pairs) and not getattr(launcher, "queued", 0):
                break
            if timeout is not None and time.monotonic() - t0 > timeout:
                bar.close()
                queued = getattr(launcher, "queued", 0)
                print(f"stopped waiting after {timeout:.0f}s; the tasks go on (bench status --results {out})"
                      + (f"; {queued} local shards not started: run again" if queued else ""), file=sys.stderr)
                return 1
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        bar.close()
        print(f"stopped waiting; the tasks go on (bench status --results {out})", file=sys.stderr)
        return 130
    finally:
        bar.close()
    return print_status(out, plan, errors=20)


def _finished(out, cell, since: float) -> bool:
    state, _ = cell_state(out, cell)
    if state in (DONE, NOT_APPLICABLE):
        return True
    if state == FAILED:  # an error record counts once this launch wrote it (old ones are being retried)
        path = record_path(out, cell["model"], cell["dataset"], cell["protocol"], cell["seed"], cell.get("layer", "last"))
        return path.stat().st_mtime >= since - 1
    return False


def task_rows(out) -> list[tuple[int, str, str, str]]:
    """(shard, launcher, job id, state) of the latest task of every submitted shard."""
    from .launchers import make_launcher
    from .args import SlurmOptions
    rows = []
    launchers = {}
    for shard, (name, job_id) in sorted(latest_tasks(out).items()):
        launcher = launchers.setdefault(name, make_launcher(name, out, SlurmOptions()))
        try:
            state = launcher.state(launcher.job(job_id))
        except Exception as e:  # noqa: BLE001 - e.g. sacct unreachable from this machine: say so, go on
            state = f"UNKNOWN ({type(e).__name__})"
        rows.append((shard, name, job_id, state))
    return rows


def print_status(out, plan, errors: int = 20) -> int:
    """Print the status report; exit code 0 when every planned cell is finished and no task ended badly."""
    states = cell_states(out, plan)
    table = by_protocol(states)
    width = max([len("protocol")] + [len(p) for p in table])
    print(f"{'protocol':<{width}}  " + "  ".join(f"{s:>14}" for s in STATES))
    for proto, counts in table.items():
        print(f"{proto:<{width}}  " + "  ".join(f"{counts[s]:>14}" for s in STATES))
    total = Counter(s for _, s, _ in states)
    print(f"{'all':<{width}}  " + "  ".join(f"{total[s]:>14}" for s in STATES))
    rows = task_rows(out)
    from .launchers import ACTIVE
    running = [r for r in rows if r[3] in ACTIVE]
    bad = [r for r in rows if r[3].split()[0] in ENDED_BADLY]
    if rows:
        print(f"tasks: {len(rows)} shards submitted; " + ", ".join(
            f"{k.lower()} {v}" for k, v in sorted(Counter(r[3] for r in rows).items())))
    for shard, name, job_id, state in running:
        print(f"  running: shard {shard} as {name} task {job_id} ({state})")
    for shard, name, job_id, state in bad:
        log = job_folder(out).parent / job_id / f"{job_id}_0_log.err"
        print(f"  failed:  shard {shard} as {name} task {job_id} ({state}); log {log}")
    failed = [(c, err) for c, s, err in states if s == FAILED]
    for c, err in failed[:errors]:
        print(f"  error:   {c['model']} × {c['dataset']} × {c['protocol']} (seed {c['seed']}): {err}")
    if len(failed) > errors:
        print(f"  ... and {len(failed) - errors} more failed cells")
    return 0 if total[MISSING] == 0 and total[FAILED] == 0 and not bad else 1


def cmd_status(args) -> int:
    plan = load_plan(args.results)
    if plan is None:
        raise ConfigError(f"{args.results}: no .launch/plan.json; `bench status` reads what `bench run --out "
                          f"{args.results}` planned, run that first")
    print_status(args.results, plan, args.errors)
    return 0
