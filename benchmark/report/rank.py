"""`bench rank`: rank a zoo for a new domain with the cheap proxies only, reusing cached features, and recommend a
model: the trusted proxy's winner and runner-up, whether they are distinguishable, which proxies agree, and which
proxies were left out (constant or saturated on this pool). The decision itself is in decide.py."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic import write_text
from ..errors import ConfigError
from ..paths import under
from .args import add_rank_args  # noqa: F401  (kept importable from here)
from .load import load_records, seed_summary
from .pool import add_pool_scores
from .tables import to_markdown


def _dataset_config(args):
    from ..config import DatasetEntry, DatasetsConfig, Settings, load_datasets
    if args.datasets:
        cfg = load_datasets(args.datasets)
        if any(d.name == args.dataset for d in cfg.datasets):
            return cfg, args.dataset
    path = Path(args.dataset).expanduser()
    if path.is_dir():
        from ..checks import NAME, suggested_name
        from ..config import RULES
        problem = RULES[DatasetEntry]["resolution"].problem(args.resolution)
        if problem:
            raise ConfigError(f"--resolution {problem}")
        name = path.resolve().name  # '.', '..' and 'a/..' name the folder they resolve to
        problem = NAME.problem(name)
        if problem:  # the folder's name becomes the records' folder and rank_<name>.csv
            raise ConfigError(f"--dataset folder '{path}': its name {problem}; rename the folder (e.g. "
                              f"'{suggested_name(name)}') or give it an entry with such a name in --datasets")
        entry = DatasetEntry(name=name, folder=str(path), resolution=args.resolution)
        _check_folder(entry)
        return DatasetsConfig("<bench rank>", [entry], Settings(), {}), entry.name
    raise ConfigError(f"dataset '{args.dataset}' is neither an entry of {args.datasets or '(no --datasets given)'} "
                      f"nor a folder with train/; pass --datasets or an ImageFolder path")


def _check_folder(entry) -> None:
    """Plan the folder's splits up front (listing files only): a folder the proxies cannot use (one class, a class
    too small for the carves) fails here in one line instead of as one error record per model."""
    from ..data import load_source, plan_splits
    plan_splits(entry, load_source(entry))


def _track_record(args, name: str, target: str):
    """Mean Kendall τ of each proxy with the target on the past records of --results (datasets other than this
    one), best first: how `bench select` chooses its proxy."""
    from ..select_core import best_proxy, evidence
    try:
        summ, _, meta = evidence(args.results, target)
    except ConfigError as e:
        raise ConfigError(f"--results is read for the proxies' track record: {e}") from None
    _, ranking = best_proxy(summ, meta, target, exclude=name)
    if ranking.empty:
        raise ConfigError(f"--results '{args.results}': no proxy has records on a dataset with '{target}' records "
                          f"(other than '{name}'); the track record needs both")
    return ranking


def _score_table(out, name, models, proxies, seed):
    """(scores: candidate x proxy seed means of the primary metric, per-candidate best possible values per proxy,
    the first not-ok reason per proxy, the records of `seed` by (model, proxy), every seed mean of the dataset)."""
    from ..proxies import PROXIES
    from ..records import read_record, record_path
    long, cells = load_records(out)
    if "layer" in long:  # per-layer records (issue 21): models are compared at their penultimate features
        long, cells = long[long.layer == "last"], cells[cells.layer == "last"]
    mean = add_pool_scores(seed_summary(long[(long.dataset == name) & long.model.isin(models)]))
    scores = pd.DataFrame(index=pd.Index(models, name="model"))
    best, reasons, recs = {}, {}, {}
    for p in proxies:
        meta = PROXIES.get(p)
        scores[p] = mean[(mean.protocol == p) & (mean.metric == meta.primary)].set_index("model")["mean"]
        recs.update({(m, p): read_record(record_path(out, m, name, p, seed)) or {} for m in models})
        dims = {m: (recs[m, p].get("num_classes"), recs[m, p].get("feature_dim")) for m in models}
        if meta.best is not None:
            best[p] = pd.Series({m: meta.best_possible(*d) if None not in d else np.nan for m, d in dims.items()})
        bad = cells[(cells.dataset == name) & (cells.protocol == p) & (cells.status != "ok") & (cells.error != "")]
        if len(bad):
            reasons[p] = bad.error.iloc[0]
    return scores, best, reasons, recs, mean


def _correctness(zoo, dsets, opts, name, proxies, recs, seed) -> tuple[dict, list]:
    """Per-image test correctness of the accuracy-type proxies for every model with an ok record (from the
    features the cells cached), and notes on models left without it."""
    from ..data.store import PixelStore
    from ..features import FeatureCache
    from ..runner import GroupContext, RunSummary, protocol_hp
    from .predictions import PREDICTORS, correctness
    cache = FeatureCache(opts.cache_dir or Path(opts.out) / ".cache")
    entry = next(d for d in dsets.datasets if d.name == name)
    correct, notes, sources = {}, [], {}
    device = torch.device(opts.device)
    for m in zoo.models:
        ctx = GroupContext(m, entry, dsets, opts, cache, RunSummary(), sources, PixelStore(cache.root / "pixels"),
                           log=lambda *_: None)
        for p in proxies:
            rec = recs.get((m.name, p)) or {}
            if p not in PREDICTORS or rec.get("status") != "ok":
                continue
            c, why = correctness(ctx, p, seed, rec, protocol_hp(dsets, p), device)
            if c is None:
                notes.append(f"{m.name} × {p}: no interval ({why})")
            else:
                correct.setdefault(p, {})[m.name] = c
    return correct, notes


def _table(scores, flags, correct, key, order, n_boot) -> pd.DataFrame:
    """The printed table: models in `order`, each proxy's score (marked when left out of the decision) and, for
    the accuracy proxies with per-image predictions, its bootstrap interval over the test images beside it.
    Proxies with no score at all appear only among the left-out ones."""
    from .decide import accuracy_interval
    table = pd.DataFrame(index=pd.Index(order, name="model"))
    for p in scores.columns:
        if scores[p].notna().any():
            table[key[p] + (" (left out)" if flags[p] else "")] = scores[p]
        if p in correct:
            ci = {m: accuracy_interval(c, n_boot) for m, c in correct[p].items()}
            table[f"{p} 95% CI"] = pd.Series({m: f"{lo:.2f}–{hi:.2f}" for m, (lo, hi) in ci.items()})
    table = table.reset_index()
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def rank(args) -> int:
    from ..config import load_zoo
    from ..devices import resolve_device
    from ..paths import writable_dir
    from ..proxies import PROXIES
    from ..runner import RunOptions, run_grid
    from ..validate import problems
    from ..select_core import order_models
    from .decide import choose_trusted, decide, describe, flag
    zoo = load_zoo(args.zoo)
    dsets, name = _dataset_config(args)
    proxies = list(dict.fromkeys(p.strip() for p in args.proxy.split(",") if p.strip()))
    for p in proxies:
        PROXIES.get(p, "bench rank --proxy")
    found = problems(zoo, dsets, datasets=[name])
    if found:
        raise ConfigError(found[0])
    target = args.target or dsets.settings.target
    track = _track_record(args, name, target) if args.results else None  # a bad --results fails before any work
    writable_dir(args.out, "--out")
    if args.cache_dir:
        writable_dir(args.cache_dir, "--cache-dir")
    opts = RunOptions(out=args.out, cache_dir=args.cache_dir, device=resolve_device(args.device), datasets=[name],
                      protocols=proxies)
    s = run_grid(zoo, dsets, opts)
    seed = int(dsets.settings.seeds[0])
    models = [m.name for m in zoo.models]
    scores, best, reasons, recs, mean = _score_table(args.out, name, models, proxies, seed)
    flags = {p: flag(scores[p], best.get(p)) for p in proxies}
    flags = {p: f + (f": {reasons[p]}" if f and p in reasons else "") for p, f in flags.items()}
    usable = [p for p in proxies if not flags[p]]
    trusted, why = choose_trusted(usable, track, proxies)
    correct, notes = _correctness(zoo, dsets, opts, name, usable, recs, seed)
    key = {p: f"{p}.{PROXIES.get(p).primary}" for p in proxies}
    higher = {p: PROXIES.get(p).higher_is_better for p in proxies}
    decision = decide(scores, higher, flags, trusted, correct, args.bootstrap) if trusted else None
    by = trusted or proxies[0]
    order = order_models(scores[by], higher[by])
    table = _table(scores, flags, correct, key, order + [m for m in models if m not in order], args.bootstrap)
    ft = mean[(mean.protocol == target) & (mean.metric == "top1")].set_index("model")["mean"]
    if len(ft):  # when --out is a bench run's results with the target on this dataset
        table.insert(len(table.columns), f"{target}.top1 (recorded)", table.model.map(ft))
    here = under(Path(args.out), name, what="--out folder")
    here.mkdir(parents=True, exist_ok=True)
    table.to_csv(here / "rank.csv", index=False)
    write_text(here / "rank.json", json.dumps({"dataset": name, "trusted": trusted, "why": why, "flags": flags,
                                               "seed": seed, "decision": decision, "notes": notes},
                                              indent=1, default=str))
    print(f"\nRanking of {len(table)} models on '{name}' by {key[by]} ({s.ok} cells computed, {s.skipped} reused"
          + (f"; proxy means over seeds {list(dsets.settings.seeds)}, intervals on seed {seed}"
             if len(dsets.settings.seeds) > 1 else "") + "):")
    print(to_markdown(table, ".2f"))
    if decision is None:
        print("No recommendation: no proxy can tell the models apart.")
        for p, f in flags.items():
            print(f"  left out: {p} — {f}")
    else:
        print("\n".join(describe(decision, key[trusted], why)))
    for n in notes:
        print(f"  note: {n}")
    print(f"records, rank.csv and rank.json in {here}/ (--out {args.out})")
    for cell, msg in s.errors:
        print(f"  failed: {cell.model} × {cell.protocol} (seed {cell.seed}): {msg}", file=sys.stderr)
    if s.errors:
        print(f"{len(s.errors)} cell(s) failed; see the error records under {here}", file=sys.stderr)
    return 1 if s.errors else 0
