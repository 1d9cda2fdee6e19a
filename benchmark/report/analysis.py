"""The report's analyses beyond per-dataset correlation: cross-domain (--cross), significance between proxies,
quality per compute and transfer diagnostics. Each writes its CSV and figure and returns markdown for the index."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .tables import to_markdown


def run_analyses(out: Path, args, scores, target, corr, summ, meta, results=None) -> tuple[list, list]:
    """(figure file names, markdown lines). `results`: the records directory, when reporting records."""
    figs, md = [], []
    draw = not args.no_figures
    if args.cross:
        f, m = _cross(out, args, scores, target, meta, draw)
        figs, md = figs + f, md + m
    f, m = _significance(out, args, scores, target, corr, meta, draw)
    figs, md = figs + f, md + m
    if results is not None:
        f, m = _cost(out, results, summ, args.target, draw)
        figs, md = figs + f, md + m
        from .transfer_plots import transfer_section
        f, m = transfer_section(out, results, draw)
        figs, md = figs + f, md + m
    (out / "analysis.md").write_text("\n".join(md) + "\n")
    return figs, md


def _cross(out, args, scores, target, meta, draw):
    from .cross import cross_heatmaps, cross_summary, cross_table, generalisation_words, meta_scores
    all_scores, all_meta = scores, dict(meta)
    # the target on A predicting the target on B: the baseline every cheap proxy is measured against
    all_scores = pd.concat([all_scores, target.rename(columns={"target": "score"}).assign(proxy=args.target)])
    if args.zoo:
        from ..config import load_zoo
        ms, mmeta = meta_scores(load_zoo(args.zoo), known=meta)
        all_scores = pd.concat([all_scores, ms])
        all_meta = {**mmeta, **all_meta}
    cross = cross_table(all_scores, target, all_meta, args.transform)
    cross.to_csv(out / "cross_correlations.csv", index=False)
    summ = cross_summary(cross)
    summ.to_csv(out / "cross_summary.csv", index=False)
    figs = [Path(p).name for p in cross_heatmaps(cross, lambda p: out / f"cross_{p}.png")] if draw else []
    md = ["## Cross-domain: a proxy on one dataset predicting the target on another", "",
          f"`cross_correlations.csv` ({len(cross)} rows); heatmaps `cross_<proxy>.png`. Mean Kendall τ per proxy:",
          "", *generalisation_words(summ), ""]
    print(f"wrote {out / 'cross_correlations.csv'} and {len(figs)} cross-domain heatmap(s)")
    return figs, md


def _significance(out, args, scores, target, corr, meta, draw):
    from .compare import cd_diagram, compare_proxies, friedman, verdict_words
    ceiling = corr[["dataset", "target_can_rank"]].drop_duplicates("dataset") if "target_can_rank" in corr else None
    per, pairs = compare_proxies(scores, target, meta, n_boot=args.bootstrap, seed=args.seed, ceiling=ceiling)
    per.to_csv(out / "proxy_comparison_per_dataset.csv", index=False)
    pairs.to_csv(out / "proxy_comparison.csv", index=False)
    fr = friedman(corr) if not corr.empty else None
    figs = []
    if fr is not None:
        fr["table"].to_csv(out / "friedman_table.csv")
        if draw:
            cd_diagram(fr, out / "cd_diagram.png")
            figs.append("cd_diagram.png")
    md = ["## Which proxy beats which", "",
          "Paired bootstrap over models per dataset (`proxy_comparison_per_dataset.csv`), Wilcoxon signed-rank on "
          "the per-dataset Kendall τ differences across datasets (`proxy_comparison.csv`; Δ = proxy_a − proxy_b).",
          "", *verdict_words(pairs, fr), ""]
    print("\n".join(md[4:]))
    return figs, md


def _cost(out, results, summ, target_name, draw):
    from .cost import cost_plot, cost_table, cost_words, load_costs
    table, basis = cost_table(load_costs(results), summ, target_name)
    if table.empty:
        return [], []
    table.to_csv(out / "cost.csv", index=False)
    figs = []
    if draw:
        cost_plot(table, target_name, basis, out / "cost_quality.png")
        figs.append("cost_quality.png")
    md = ["## Quality per unit of compute", "", f"Median cost per cell in {basis} (`cost.csv`).", "",
          *cost_words(table, target_name, basis), "",
          to_markdown(table[["proxy", "median_cost_s", "cells", "kendall_mean", "regret_top1_mean",
                             "cost_ratio_to_target", "pareto_tau"]]), ""]
    return figs, md
