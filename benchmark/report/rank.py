"""`bench rank`: rank a zoo for a new domain with the cheap proxies only, reusing cached features, and recommend a
model: the trusted proxy's winner and runner-up, whether they are distinguishable, which proxies agree, and which
proxies were left out (constant or saturated on this pool). The decision itself is in decide.py."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic import write_text
from ..errors import ConfigError
from ..layers import LAST
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


def candidate(model: str, layer: str, per_layer: bool) -> str:
    """A row of the ranking: the model, or with --layers the (model, layer) pair as 'model@layer'."""
    return f"{model}@{layer}" if per_layer else model


def _candidates(plan, models, per_layer) -> list[tuple[str, str]]:
    """(model, layer) of every row to rank, from the run's plan: each model at 'last', or with layers every layer
    the plan gives its proxy cells, shallow to deep ('last' deepest), in zoo order."""
    if not per_layer:
        return [(m, LAST) for m in models]
    seen = {m: [] for m in models}
    for c in plan:
        if c.model in seen and c.layer not in seen[c.model]:
            seen[c.model].append(c.layer)
    return [(m, lay) for m in models for lay in [x for x in seen[m] if x != LAST] + [LAST] * (LAST in seen[m])]


def _score_table(out, name, models, proxies, seed, plan=(), per_layer=False):
    """(scores: candidate x proxy seed means of the primary metric, per-candidate best possible values per proxy,
    the first not-ok reason per proxy, the records of `seed` by (candidate, proxy), every seed mean of the
    dataset, {candidate: (model, layer)}). Candidates are the models at their penultimate features, or with
    `per_layer` every (model, layer) pair with records."""
    from ..proxies import PROXIES
    from ..records import read_record, record_path
    long, cells = load_records(out)
    if "layer" not in long:
        long, cells = long.assign(layer=LAST, layer_index=np.nan), cells.assign(layer=LAST)
    pairs = _candidates(plan, models, per_layer)
    if not per_layer:  # per-layer records (issue 21): models are compared at their penultimate features
        long, cells = long[long.layer == LAST], cells[cells.layer == LAST]
    mean = add_pool_scores(seed_summary(long[(long.dataset == name) & long.model.isin(models)]))
    where = {candidate(m, lay, per_layer): (m, lay) for m, lay in pairs}
    scores = pd.DataFrame(index=pd.Index(list(where), name="model"))
    best, reasons, recs = {}, {}, {}
    for p in proxies:
        meta = PROXIES.get(p)
        rows = mean[(mean.protocol == p) & (mean.metric == meta.primary)]
        by = {(r.model, r.layer): r.mean for r in rows.itertuples()} if "layer" in rows else \
            {(r.model, LAST): r.mean for r in rows.itertuples()}
        scores[p] = pd.Series({c: by.get(ml, np.nan) for c, ml in where.items()}, dtype=float)
        recs.update({(c, p): read_record(record_path(out, m, name, p, seed, lay)) or {} for c, (m, lay) in where.items()})
        dims = {c: (recs[c, p].get("num_classes"), recs[c, p].get("feature_dim")) for c in where}
        if meta.best is not None:
            best[p] = pd.Series({c: meta.best_possible(*d) if None not in d else np.nan for c, d in dims.items()})
        bad = cells[(cells.dataset == name) & (cells.protocol == p) & (cells.status != "ok") & (cells.error != "")]
        if len(bad):
            reasons[p] = bad.error.iloc[0]
    return scores, best, reasons, recs, mean, where


def _correctness(zoo, dsets, opts, name, proxies, recs, seed, where) -> tuple[dict, list]:
    """Per-image test correctness of the accuracy-type proxies for every candidate with an ok record (from the
    features the cells cached, at the candidate's layer), and notes on candidates left without it."""
    from ..data.store import PixelStore
    from ..features import FeatureCache
    from ..runner import GroupContext, RunSummary, protocol_hp
    from .predictions import PREDICTORS, correctness
    cache = FeatureCache(opts.cache_dir or Path(opts.out) / ".cache")
    entry = next(d for d in dsets.datasets if d.name == name)
    correct, notes, sources, ctxs = {}, [], {}, {}
    device = torch.device(opts.device)
    by_name = {m.name: m for m in zoo.models}
    for c, (m, layer) in where.items():
        if m not in ctxs:
            ctxs[m] = GroupContext(by_name[m], entry, dsets, opts, cache, RunSummary(), sources,
                                   PixelStore(cache.root / "pixels"), log=lambda *_: None)
        for p in proxies:
            rec = recs.get((c, p)) or {}
            if p not in PREDICTORS or rec.get("status") != "ok":
                continue
            ok, why = correctness(ctxs[m], p, seed, rec, protocol_hp(dsets, p), device, layer)
            if ok is None:
                notes.append(f"{c} × {p}: no interval ({why})")
            else:
                correct.setdefault(p, {})[c] = ok
    return correct, notes


def best_layers(scores: pd.Series, where: dict, higher: bool) -> dict:
    """Per model, its best layer by one proxy's scores over (model, layer) candidates: {model: {layer, score,
    last}} (`last`: the score at the penultimate features, for comparison; None when not scored)."""
    out = {}
    for c, (m, layer) in where.items():
        v = scores.get(c)
        if v is None or not np.isfinite(v):
            continue
        cur = out.get(m)
        if cur is None or (v > cur["score"] if higher else v < cur["score"]):
            out[m] = {"layer": layer, "score": float(v)}
    for m, row in out.items():
        last = scores.get(candidate(m, LAST, True))
        row["last"] = float(last) if last is not None and np.isfinite(last) else None
    return out


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
    from ..layer_plan import layer_spec, needs_table
    from ..runner import RunOptions, plan_cells, run_grid
    from ..validate import problems
    from ..select_core import order_models
    from .decide import choose_trusted, decide, describe, flag
    zoo = load_zoo(args.zoo)
    dsets, name = _dataset_config(args)
    if args.layers is not None:  # --layers: this dataset's proxies per layer, as its `layers:` setting would
        dsets.datasets = [dataclasses.replace(d, layers=args.layers) if d.name == name else d for d in dsets.datasets]
    entry = next(d for d in dsets.datasets if d.name == name)
    per_layer = needs_table(layer_spec(entry, dsets.settings))
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
    plan = plan_cells(zoo, dsets, opts) if per_layer else ()
    scores, best, reasons, recs, mean, where = _score_table(args.out, name, models, proxies, seed, plan, per_layer)
    flags = {p: flag(scores[p], best.get(p)) for p in proxies}
    flags = {p: f + (f": {reasons[p]}" if f and p in reasons else "") for p, f in flags.items()}
    usable = [p for p in proxies if not flags[p]]
    trusted, why = choose_trusted(usable, track, proxies)
    correct, notes = _correctness(zoo, dsets, opts, name, usable, recs, seed, where)
    key = {p: f"{p}.{PROXIES.get(p).primary}" for p in proxies}
    higher = {p: PROXIES.get(p).higher_is_better for p in proxies}
    decision = decide(scores, higher, flags, trusted, correct, args.bootstrap) if trusted else None
    by = trusted or proxies[0]
    order = order_models(scores[by], higher[by])
    table = _table(scores, flags, correct, key, order + [c for c in where if c not in order], args.bootstrap)
    ft = mean[(mean.protocol == target) & (mean.metric == "top1")]
    ft = ft[ft.layer == LAST] if "layer" in ft else ft
    ft = ft.set_index("model")["mean"]
    if len(ft):  # when --out is a bench run's results with the target on this dataset (a model's, any layer)
        table.insert(len(table.columns), f"{target}.top1 (recorded)", table.model.map(lambda c: ft.get(where[c][0])))
    layers = None
    if per_layer:
        table = table.rename(columns={"model": "candidate"})
        table.insert(2, "model", table.candidate.map(lambda c: where[c][0]))
        table.insert(3, "layer", table.candidate.map(lambda c: where[c][1]))
        layers = best_layers(scores[by], where, higher[by])
    here = under(Path(args.out), name, what="--out folder")
    here.mkdir(parents=True, exist_ok=True)
    table.to_csv(here / "rank.csv", index=False)
    write_text(here / "rank.json", json.dumps({"dataset": name, "trusted": trusted, "why": why, "flags": flags,
                                               "seed": seed, "decision": decision, "notes": notes,
                                               "per_layer": per_layer, "best_layers": layers},
                                              indent=1, default=str))
    what = f"(model, layer) pairs of {len(models)} models" if per_layer else "models"
    print(f"\nRanking of {len(table)} {what} on '{name}' by {key[by]} ({s.ok} cells computed, {s.skipped} reused"
          + (f"; proxy means over seeds {list(dsets.settings.seeds)}, intervals on seed {seed}"
             if len(dsets.settings.seeds) > 1 else "") + "):")
    print(to_markdown(table, ".2f"))
    if decision is None:
        print("No recommendation: no proxy can tell the models apart.")
        for p, f in flags.items():
            print(f"  left out: {p} — {f}")
    else:
        print("\n".join(describe(decision, key[trusted], why)))
        if per_layer:
            w_model, w_layer = where[decision["winner"]]
            last = (layers.get(w_model) or {}).get("last")
            vs = "" if w_layer == LAST or last is None else f" ({key[by]} at 'last': {last:.4g})"
            print(f"  layer: probe or tune {w_model} at '{w_layer}'{vs}")
    if layers:
        print(f"Best layer of each model by {key[by]}: " + "; ".join(
            f"{m} '{r['layer']}' {r['score']:.4g}" + ("" if r["layer"] == LAST or r["last"] is None
                                                      else f" (last {r['last']:.4g})") for m, r in layers.items()))
    for n in notes:
        print(f"  note: {n}")
    print(f"records, rank.csv and rank.json in {here}/ (--out {args.out})")
    for cell, msg in s.errors:
        at = "" if cell.layer == LAST else f" @ {cell.layer}"
        print(f"  failed: {cell.model} × {cell.protocol}{at} (seed {cell.seed}): {msg}", file=sys.stderr)
    if s.errors:
        print(f"{len(s.errors)} cell(s) failed; see the error records under {here}", file=sys.stderr)
    return 1 if s.errors else 0
