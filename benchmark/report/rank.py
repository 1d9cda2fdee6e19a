"""`bench rank`: rank a zoo for a new domain with the cheap proxies only, reusing cached features."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from ..errors import ConfigError
from .args import add_rank_args  # noqa: F401  (kept importable from here)
from .load import last_layer, load_records, seed_summary
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
        from ..config import RULES
        problem = RULES[DatasetEntry]["resolution"].problem(args.resolution)
        if problem:
            raise ConfigError(f"--resolution {problem}")
        entry = DatasetEntry(name=path.name, folder=str(path), resolution=args.resolution)
        _check_folder(entry)
        return DatasetsConfig("<bench rank>", [entry], Settings(), {}), entry.name
    raise ConfigError(f"dataset '{args.dataset}' is neither an entry of {args.datasets or '(no --datasets given)'} "
                      f"nor a folder with train/; pass --datasets or an ImageFolder path")


def _check_folder(entry) -> None:
    """Plan the folder's splits up front (listing files only): a folder the proxies cannot use (one class, a class
    too small for the carves) fails here in one line instead of as one error record per model."""
    from ..data import load_source, plan_splits
    plan_splits(entry, load_source(entry))


def rank(args) -> int:
    from ..config import load_zoo
    from ..devices import resolve_device
    from ..paths import writable_dir
    from ..proxies import PROXIES
    from ..runner import RunOptions, run_grid
    from ..validate import problems
    zoo = load_zoo(args.zoo)
    dsets, name = _dataset_config(args)
    proxies = [p.strip() for p in args.proxy.split(",") if p.strip()]
    for p in proxies:
        PROXIES.get(p, "bench rank --proxy")
    found = problems(zoo, dsets, datasets=[name])
    if found:
        raise ConfigError(found[0])
    opts = RunOptions(out=args.results, device=resolve_device(args.device), datasets=[name], protocols=proxies)
    writable_dir(args.results, "--results")
    writable_dir(args.out, "--out")
    s = run_grid(zoo, dsets, opts)
    long, _ = load_records(args.results)
    long = last_layer(long)  # models are compared at their penultimate features
    mean = add_pool_scores(seed_summary(long[long.dataset == name]))
    table = pd.DataFrame({"model": [m.name for m in zoo.models]}).set_index("model")
    for p in proxies:
        meta = PROXIES.get(p)
        col = mean[(mean.protocol == p) & (mean.metric == meta.primary)].set_index("model")["mean"]
        table[f"{p}.{meta.primary}"] = col
    target = dsets.settings.target
    ft = mean[(mean.protocol == target) & (mean.metric == "top1")].set_index("model")["mean"]
    if len(ft):
        table[f"{target}.top1 (recorded)"] = ft
    first = PROXIES.get(proxies[0])
    key = f"{proxies[0]}.{first.primary}"
    table = table.sort_values(key, ascending=not first.higher_is_better, na_position="last")
    table = table.reset_index()
    table.insert(0, "rank", range(1, len(table) + 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"rank_{name}.csv"
    table.to_csv(path, index=False)
    print(f"Ranking of {len(table)} models on '{name}' by {key} "
          f"({'higher' if first.higher_is_better else 'lower'} is better; {s.ok} cells computed, "
          f"{s.skipped} reused):")
    print(to_markdown(table, ".2f"))
    print(f"wrote {path}")
    for cell, msg in s.errors:
        print(f"  failed: {cell.model} × {cell.protocol} (seed {cell.seed}): {msg}", file=sys.stderr)
    if s.errors:
        print(f"{len(s.errors)} cell(s) failed; see the error records under {args.results}", file=sys.stderr)
    return 1 if s.errors else 0
