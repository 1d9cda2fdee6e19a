"""`bench select --dataset NEW --budget 4h`: the live half of budgeted selection (see select.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import ConfigError
from .paths import under


def _cell_seconds(results, model, dataset, protocol, seed) -> float:
    from .records import read_record, record_path
    from .report.cost import cell_cost
    rec = read_record(record_path(results, model, dataset, protocol, seed)) or {}
    c = cell_cost(rec)
    return c["device_s"] if np.isfinite(c["device_s"]) else (c["wall_s"] if np.isfinite(c["wall_s"]) else 0.0)


def run_live(args, summ, cost, meta, out) -> int:
    from .config import load_zoo
    from .records import read_record, record_path
    from .report.rank import _dataset_config
    from .report.tables import to_markdown
    from .runner import RunOptions, run_grid
    from .select_core import best_proxy, order_models, parse_budget
    if not args.dataset:
        raise ConfigError("bench select: pass --dataset NEW (or --simulate --results DIR)")
    budget = parse_budget(args.budget)
    zoo = load_zoo(args.zoo)
    dsets, name = _dataset_config(args)
    proxy, ranking = best_proxy(summ, meta, args.target, exclude=name)
    if proxy is None:
        raise ConfigError(f"{args.results}: no proxy has records on a dataset with '{args.target}' records; run "
                          f"'bench run' with proxies and the target on some datasets first")
    print(f"proxy chosen on the existing records: {proxy} (mean Kendall τ {ranking[proxy]:.2f} over other datasets)")
    from .report.ceiling import cannot_rank
    noisy = sorted(summ[summ.target_can_rank.map(cannot_rank).astype(bool)].dataset.unique()) \
        if "target_can_rank" in summ else []
    if noisy:
        print(f"left out of that choice: {', '.join(noisy)} (the target's noise ceiling says it cannot rank the "
              f"models there)")
    from .devices import resolve_device
    device = resolve_device(args.device)
    seed = int(dsets.settings.seeds[0])
    log = lambda *_: None  # noqa: E731 - the grid's per-cell lines; the summary below is what matters here
    run_grid(zoo, dsets, RunOptions(out=args.results, device=device, datasets=[name], protocols=[proxy],
                                    seeds=[seed]), log=log)
    models = [m.name for m in zoo.models]
    scores = {}
    for m in models:
        rec = read_record(record_path(args.results, m, name, proxy, seed)) or {}
        scores[m] = (rec.get("metrics") or {}).get(rec.get("primary", "top1"), np.nan)
    order = order_models(pd.Series(scores).rename_axis("model"), meta[proxy].higher_is_better)
    spent = sum(_cell_seconds(args.results, m, name, proxy, seed) for m in models)
    prior = cost[cost.protocol == args.target].cost_s.median()  # a fine-tune's cost elsewhere: the first estimate
    rows, done = [], []
    for m in order:
        estimate = float(np.median(done)) if done else (float(prior) if np.isfinite(prior) else 0.0)
        if spent + estimate > budget:
            print(f"stopping before {m}: {spent / 3600:.2f} h spent + ~{estimate / 3600:.2f} h would exceed the budget")
            break
        run_grid(zoo, dsets, RunOptions(out=args.results, device=device, datasets=[name], models=[m],
                                        protocols=[args.target], seeds=[seed]), log=log)
        sec = _cell_seconds(args.results, m, name, args.target, seed)
        rec = read_record(record_path(args.results, m, name, args.target, seed)) or {}
        spent += sec
        done.append(sec)
        rows.append({"rank": len(rows) + 1, "model": m, f"{proxy}": scores[m],
                     f"{args.target}.top1": (rec.get("metrics") or {}).get("top1", np.nan), "cost_s": sec,
                     "spent_s": spent})
    table = pd.DataFrame(rows)
    table.to_csv(under(out, f"select_{name}.csv", what="--out file"), index=False)
    print(to_markdown(table) if len(table) else "_no fine-tune fitted in the budget_\n")
    per_ft = float(np.median(done)) if done else float(prior)
    print(f"budget {budget / 3600:.2f} h, used {spent / 3600:.2f} h (proxy cells included); fine-tuning all "
          f"{len(models)} models would cost ~{len(models) * per_ft / 3600:.2f} h at {per_ft:.0f} s each")
    if len(table) and table[f"{args.target}.top1"].notna().any():
        best = table.loc[table[f"{args.target}.top1"].idxmax()]
        print(f"chosen: {best.model} ({args.target} top-1 {best[f'{args.target}.top1']:.2f})")
    return 0

