"""What a launched grid is made of, kept beside its records: the plan (every cell with its config hash and shard)
and the submissions (which array task ran which shard). `bench status` and re-runs read only these and the records,
so they work from any machine that sees the results directory."""
from __future__ import annotations

import datetime as _dt
import json
from collections import Counter
from pathlib import Path

from ..atomic import write_text
from ..records import read_record, record_path

DONE, FAILED, NOT_APPLICABLE, MISSING = "done", "failed", "not_applicable", "missing"
STATES = (DONE, FAILED, NOT_APPLICABLE, MISSING)


def launch_dir(out) -> Path:
    return Path(out) / ".launch"


def job_folder(out) -> Path:
    """submitit's pickles and logs, one folder per task (%j = array job id _ task id)."""
    return launch_dir(out) / "jobs" / "%j"


def group_shards(cells, count: int) -> dict:
    """(model, dataset) -> shard, exactly as `runner.run_grid` deals groups out (group order % count)."""
    groups = dict.fromkeys((c.model, c.dataset) for c in cells)
    return {g: i % count for i, g in enumerate(groups)}


def make_plan(zoo, dsets, opts, count: int | None) -> dict:
    from ..config import stable_hash
    from ..runner import cell_config, data_identities, plan_cells
    cells = plan_cells(zoo, dsets, opts)
    ids = data_identities(dsets, {c.dataset for c in cells}, {})  # part of each record's hash, as run_grid has it
    count = count or max(1, len({(c.model, c.dataset) for c in cells}))
    shard_of = group_shards(cells, count)
    return {"count": count, "out": str(opts.out),
            "cells": [{"model": c.model, "dataset": c.dataset, "protocol": c.protocol, "seed": c.seed,
                       **({"layer": c.layer} if c.layer != "last" else {}),
                       "hash": stable_hash(cell_config(zoo, dsets, c, ids.get(c.dataset))), "shard": shard_of[(c.model, c.dataset)]}
                      for c in cells]}


def save_plan(out, plan: dict) -> None:
    write_text(launch_dir(out) / "plan.json", json.dumps(plan, indent=1))


def load_plan(out) -> dict | None:
    return read_record(launch_dir(out) / "plan.json")


def cell_state(out, cell: dict) -> tuple[str, str | None]:
    """(state, last error) of one planned cell from its record. A record made under another config is missing:
    the next run recomputes it."""
    rec = read_record(record_path(out, cell["model"], cell["dataset"], cell["protocol"], cell["seed"],
                                  cell.get("layer", "last")))
    if not rec or rec.get("config_hash") != cell["hash"]:
        return MISSING, None
    status = rec.get("status")
    if status == "ok":
        return DONE, None
    if status == NOT_APPLICABLE:  # a cell the protocol cannot run on (e.g. wrong architecture): finished
        return NOT_APPLICABLE, rec.get("error") or rec.get("reason")
    return FAILED, rec.get("error")


def cell_states(out, plan: dict) -> list[tuple[dict, str, str | None]]:
    return [(c, *cell_state(out, c)) for c in plan["cells"]]


def by_protocol(states) -> dict:
    """protocol -> Counter of states, in plan order."""
    table: dict = {}
    for c, state, _ in states:
        table.setdefault(c["protocol"], Counter())[state] += 1
    return table


def shards_to_run(states) -> list[int]:
    """Shards that still hold a missing or failed cell (failed cells are retried, as a plain re-run does)."""
    return sorted({c["shard"] for c, state, _ in states if state in (MISSING, FAILED)})


def load_submissions(out) -> list[dict]:
    return read_record(launch_dir(out) / "submissions.json") or []


def add_submission(out, launcher: str, tasks: list[tuple[str, int]]) -> None:
    subs = load_submissions(out)
    subs.append({"launcher": launcher, "folder": str(job_folder(out)),
                 "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 "tasks": [{"job_id": j, "shard": s} for j, s in tasks]})
    write_text(launch_dir(out) / "submissions.json", json.dumps(subs, indent=1))


def latest_tasks(out) -> dict:
    """shard -> (launcher, job id) of the latest task that ran it."""
    latest = {}
    for sub in load_submissions(out):
        for t in sub["tasks"]:
            latest[t["shard"]] = (sub["launcher"], t["job_id"])
    return latest
