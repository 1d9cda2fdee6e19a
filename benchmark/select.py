"""`bench select`: budgeted model selection. Rank the zoo with the proxy that predicted best on the existing
records, fine-tune the top candidates in that order until the budget is spent, keep the best.

`--simulate` replays that strategy on finished records, leaving each dataset out in turn (its proxy is chosen on
the other datasets), and reports the regret after each additional fine-tune against fine-tuning everything.
Successive halving over epochs is not implemented: candidates are fine-tuned in full, one after another.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .select_core import best_proxy, evidence, order_models, parse_budget


def add_select_args(ap):
    ap.add_argument("--results", default="results", help="records directory (the evidence, and where runs go)")
    ap.add_argument("--simulate", action="store_true", help="replay the strategy on finished records")
    ap.add_argument("--zoo", default="model_zoo.yaml")
    ap.add_argument("--datasets", default="datasets.yaml", help="datasets YAML holding --dataset")
    ap.add_argument("--dataset", help="the new dataset (an entry of --datasets, or an ImageFolder path)")
    ap.add_argument("--budget", default="4h", help="device time for fine-tunes: 4h, 90m, 3600s (default 4h)")
    ap.add_argument("--target", default="finetune", help="the protocol a candidate is fine-tuned with")
    ap.add_argument("--proxies", help="comma-separated candidate proxies (default: every non-target protocol)")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--device", default=None)
    ap.add_argument("--resolution", type=int, default=None, help="input resolution for a folder dataset")


def simulate(summ, cost, meta, target: str, budgets_s=()) -> pd.DataFrame:
    """Per held-out dataset: after k fine-tunes in the chosen proxy's order, the cumulative cost (proxy cells of
    every model + the k fine-tunes) and the regret against the best fine-tuned model of all."""
    rows = []
    for dataset in sorted(summ[summ.protocol == target].dataset.unique()):
        proxy, _ = best_proxy(summ, meta, target, exclude=dataset)
        here = summ[summ.dataset == dataset]
        acc = here[here.protocol == target].set_index("model")["mean"]
        if proxy is None or proxy not in set(here.protocol):
            rows.append({"dataset": dataset, "proxy": proxy, "k": 0, "note": "no proxy measured here and elsewhere"})
            continue
        sc = here[here.protocol == proxy].set_index("model")["mean"]
        order = [m for m in order_models(sc, meta[proxy].higher_is_better) if m in acc.index]
        c = cost[cost.dataset == dataset].set_index(["model", "protocol"]).cost_s
        proxy_cost = float(sum(c.get((m, proxy), 0.0) for m in sc.index))
        ft_cost = np.array([c.get((m, target), np.nan) for m in order], dtype=float)
        full = float(np.nansum([c.get((m, target), np.nan) for m in acc.index]))
        best = float(acc.max())
        ceil = here[["ceiling_kendall", "target_can_rank"]].iloc[0].to_dict() if "ceiling_kendall" in here else {}
        for k in range(1, len(order) + 1):
            spent = proxy_cost + float(np.nansum(ft_cost[:k]))
            found = float(acc[order[:k]].max())
            rows.append({"dataset": dataset, "proxy": proxy, "k": k, "picked": order[k - 1], "cost_s": spent,
                         "fraction_of_full": spent / full if full else np.nan, "best_found": found,
                         "regret": best - found, "best_model": acc.idxmax(), **ceil})
        for b in budgets_s:  # the largest k whose cumulative cost fits the budget
            fits = [r for r in rows if r["dataset"] == dataset and r.get("k", 0) > 0 and r.get("budget_s") is None
                    and r["cost_s"] <= b]
            last = fits[-1] if fits else None
            rows.append({"dataset": dataset, "proxy": proxy, "budget_s": b, "k": last["k"] if last else 0,
                         "cost_s": last["cost_s"] if last else proxy_cost, "regret": last["regret"] if last else np.nan,
                         "best_model": acc.idxmax(), "picked": last["picked"] if last else None})
    return pd.DataFrame(rows)


def cmd_select(args) -> int:
    from .report.tables import to_markdown
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    proxies = [p.strip() for p in args.proxies.split(",")] if args.proxies else None
    summ, cost, meta = evidence(args.results, args.target, proxies)
    if args.simulate:
        budget = [parse_budget(b) for b in args.budget.split(",")] if args.budget else []
        table = simulate(summ, cost, meta, args.target, budget)
        table.to_csv(out / "select_simulation.csv", index=False)
        steps = table[table.budget_s.isna()] if "budget_s" in table else table
        print(to_markdown(steps[[c for c in ("dataset", "proxy", "k", "picked", "cost_s", "fraction_of_full",
                                             "regret") if c in steps]]))
        from .report.ceiling import cannot_rank
        noisy = sorted(summ[summ.target_can_rank.map(cannot_rank).astype(bool)].dataset.unique())
        if noisy:
            print(f"note: the target cannot rank the models on {', '.join(noisy)} (noise ceiling; see bench report): "
                  f"those datasets do not choose the proxy, and their regret measures seed noise as much as the proxy")
        print(f"wrote {out / 'select_simulation.csv'}")
        return 0
    from .select_live import run_live
    return run_live(args, summ, cost, meta, out)
