"""`bench select`: budgeted model selection. Rank the zoo with the proxy that predicted best on the existing
records, fine-tune the top candidates in that order until the budget is spent, keep the best.

`--simulate` replays that strategy on finished records, leaving each dataset out in turn (its proxy is chosen on
the other datasets), and reports the regret after each additional fine-tune against fine-tuning everything.
Successive halving over epochs is not implemented: candidates are fine-tuned in full, one after another.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError


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


def parse_budget(text: str) -> float:
    """Seconds from '4h', '90m', '3600s' or a bare number of hours."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([hms]?)\s*", str(text))
    if not m:
        raise ConfigError(f"--budget '{text}': write a duration such as 4h, 90m or 3600s")
    return float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "": 3600}[m.group(2)]


def evidence(results, target: str, proxies=None):
    """(per model x dataset x protocol seed means of the primary metric, cost in seconds per cell, ProxyMeta)."""
    from .report.cli import _proxy_meta
    from .report.cost import load_costs, seconds
    from .report.load import last_layer, load_records, seed_summary
    long, cells = load_records(results)
    long, cells = last_layer(long), last_layer(cells)  # models are compared at their penultimate features
    if cells.empty:
        raise ConfigError(f"{results}: no records found; run 'bench run' first or pass --results")
    primary = cells.groupby("protocol").primary.first().to_dict()
    summ = seed_summary(long)
    summ = summ[summ.protocol.map(primary) == summ.metric]
    if target not in set(summ.protocol):
        raise ConfigError(f"{results}: no ok records of the target '{target}'; pass --target with one of "
                          f"{sorted(summ.protocol.unique())}")
    if proxies:
        summ = summ[summ.protocol.isin(set(proxies) | {target})]
    costs = load_costs(results)
    costs["sec"] = seconds(costs)[0]
    cost = costs.groupby(["model", "dataset", "protocol"]).sec.median().rename("cost_s").reset_index()
    return summ[["model", "dataset", "protocol", "mean"]], cost, _proxy_meta(cells)


def best_proxy(summ, meta, target: str, exclude: str | None = None) -> tuple[str | None, pd.Series]:
    """The proxy with the highest mean in-domain Kendall τ on the datasets other than `exclude`."""
    from .report.tables import correlation_table
    s = summ[summ.dataset != exclude]
    tgt = s[s.protocol == target][["model", "dataset", "mean"]].rename(columns={"mean": "target"})
    sc = s[s.protocol != target].rename(columns={"protocol": "proxy", "mean": "score"})
    corr = correlation_table(sc, tgt, meta, target, n_boot=0)
    if corr.empty:
        return None, pd.Series(dtype=float)
    ranking = corr.groupby("proxy").kendall.mean().dropna().sort_values(ascending=False)
    return (ranking.index[0] if len(ranking) else None), ranking


def order_models(scores: pd.Series, higher_is_better: bool) -> list:
    """Models by the proxy, best first; ties broken by name so the order is reproducible."""
    df = scores.dropna().rename("s").reset_index()
    df["s"] = df.s * (1 if higher_is_better else -1)
    return list(df.sort_values(["s", df.columns[0]], ascending=[False, True]).iloc[:, 0])


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
        for k in range(1, len(order) + 1):
            spent = proxy_cost + float(np.nansum(ft_cost[:k]))
            found = float(acc[order[:k]].max())
            rows.append({"dataset": dataset, "proxy": proxy, "k": k, "picked": order[k - 1], "cost_s": spent,
                         "fraction_of_full": spent / full if full else np.nan, "best_found": found,
                         "regret": best - found, "best_model": acc.idxmax()})
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
        print(f"wrote {out / 'select_simulation.csv'}")
        return 0
    from .select_live import run_live
    return run_live(args, summ, cost, meta, out)
