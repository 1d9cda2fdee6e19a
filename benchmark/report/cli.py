"""`bench report`: records (or a published long table) -> tidy CSV, correlation tables, figures, index."""
from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

import pandas as pd

from ..errors import ConfigError
from .args import add_report_args  # noqa: F401  (kept importable from here)
from .ceiling import add_ceiling, ceiling_table, ceiling_words
from .health import feature_health_section
from .load import last_layer, load_records, seed_summary
from .published import scores_from_table, transform_note
from .pool import add_pool_scores
from .stats import STATISTICS
from .tables import ProxyMeta, correlation_table, summary_table, to_markdown

SHOWN = ["dataset", "proxy", "n", "kendall", "weighted_tau", "spearman", "pearson", "regret_top1", "best_in_top3",
         "ceiling_kendall", "vs_ceiling"]
CEILING_INTRO = ("The ceiling is the mean Kendall τ-b between the models' `{t}` scores at two different seeds: how "
                 "well one seed's ranking agrees with another's (`ceiling.csv`; columns `target_seeds`, "
                 "`target_seed_sd`, `ceiling_kendall` in `correlations.csv`). A proxy is within the ceiling's reach "
                 "when its τ is at least the ceiling or the ceiling lies inside its bootstrap interval. The target "
                 "cannot rank the models where the ceiling is below 0.5 or the models' spread is below the seed sd.")


def _proxy_meta(cells: pd.DataFrame) -> dict:
    from ..proxies import PROXIES
    meta = {}
    for proto, grp in cells[cells.status == "ok"].groupby("protocol"):
        if proto in PROXIES:
            p = PROXIES.get(proto)
            meta[proto] = ProxyMeta(p.higher_is_better, p.percent)
        else:  # trained protocols report top-1 accuracy in %
            meta[proto] = ProxyMeta(bool(grp.higher_is_better.iloc[0]), True)
    return meta


def missing_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Every expected (model, dataset, protocol, seed) without an ok record: error, corrupt, not applicable (the
    reason in `error`) and absent cells."""
    keys = ["model", "dataset", "protocol", "layer", "seed"]
    if cells.empty:
        return pd.DataFrame(columns=keys + ["status", "error"])
    grid = pd.MultiIndex.from_product([sorted(cells.model.unique()), sorted(cells.dataset.unique()),
                                       sorted(cells.seed.unique())], names=["model", "dataset", "seed"]).to_frame(
                                           index=False)
    # a layer is expected of a protocol where some record has it (training protocols run at 'last' only)
    pairs = cells[["protocol", "layer"]].drop_duplicates()
    grid = grid.merge(pairs, how="cross")[keys]
    merged = grid.merge(cells[keys + ["status", "error"]], how="left", on=keys)
    merged["status"] = merged.status.fillna("absent")
    merged["error"] = merged.error.fillna("")
    return merged[merged.status != "ok"].reset_index(drop=True)


def _scores_from_records(args):
    long, cells = load_records(args.results)
    if cells.empty:
        raise ConfigError(f"{args.results}: no records found; run 'bench run' first or pass --results")
    # models are ranked at their penultimate features ('last'); other layers go to the layer section
    summary = add_pool_scores(seed_summary(last_layer(long)))  # NCTI/ETran: combined across each dataset's models
    primary = cells.groupby("protocol").primary.first().to_dict()
    summary = summary[summary.protocol.map(primary) == summary.metric]
    meta = _proxy_meta(cells)
    target = summary[summary.protocol == args.target][["model", "dataset", "mean"]].rename(columns={"mean": "target"})
    proxies = _pick(args.proxies, sorted(set(summary.protocol) - {args.target}), "proxy")
    scores = summary[summary.protocol.isin(proxies)].rename(columns={"protocol": "proxy", "mean": "score"})
    return long, cells, summary, scores[["model", "dataset", "proxy", "score"]], target, meta, \
        target_per_seed(long, args.target, primary.get(args.target, "top1"))


def target_per_seed(long: pd.DataFrame, target_name: str, primary: str) -> pd.DataFrame:
    """model, dataset, seed, target: the target's primary metric per seed (the noise ceiling's input)."""
    t = long[(long.protocol == target_name) & (long.metric == primary)]
    return t[["model", "dataset", "seed", "value"]].rename(columns={"value": "target"})


def _pick(wanted, available, kind):
    if not wanted:
        return available
    wanted = [w.strip() for w in wanted.split(",") if w.strip()]
    for w in wanted:
        if w not in available:
            from ..errors import unknown_name
            raise unknown_name(kind, w, available)
    return wanted


def report(args) -> int:
    from ..paths import writable_dir
    out = writable_dir(args.out, "--out")
    if args.table:
        scores, target, meta, per_seed = scores_from_table(args)
        long = cells = summary = None
    else:
        long, cells, summary, scores, target, meta, per_seed = _scores_from_records(args)
        tidy = long.merge(seed_summary(long).rename(columns={"mean": "seed_mean", "std": "seed_std"}),
                          on=["model", "dataset", "protocol", "layer", "metric"])
        tidy.to_csv(out / "results.csv", index=False)
        missing = missing_cells(cells)
        missing.to_csv(out / "missing.csv", index=False)
        print(f"wrote {out / 'results.csv'} ({len(tidy)} rows from {len(cells)} records)")
        for row in cells[cells.status == "corrupt"].itertuples():
            print(f"bench: warning: {row.error}", file=sys.stderr)
        if summary.empty:
            n_bad = cells.status.value_counts()
            corrupt = f" and {n_bad['corrupt']} corrupt" if "corrupt" in n_bad else ""
            raise ConfigError(f"{args.results}: no ok records, {n_bad.get('error', 0)} error record(s){corrupt}; "
                              f"their messages are in {out / 'missing.csv'} — fix those cells and run 'bench run' "
                              f"again")
        if target.empty:
            print(to_markdown(summary.pivot_table(index=["dataset", "model"], columns="protocol", values="mean")
                              .reset_index()))
            raise ConfigError(f"{args.results}: no ok records for target '{args.target}'; run that protocol "
                              f"(bench run --protocols {args.target}) or pass --target with one of "
                              f"{sorted(summary.protocol.unique())}")
    ceil = ceiling_table(per_seed)
    corr = add_ceiling(correlation_table(scores, target, meta, args.target, args.transform, args.bootstrap,
                                         args.seed), ceil)
    summ = summary_table(corr)
    corr.to_csv(out / "correlations.csv", index=False)
    ceil.to_csv(out / "ceiling.csv", index=False)
    summ.to_csv(out / "summary.csv", index=False)
    shown = {p: meta[p] for p in sorted(set(scores.proxy)) if p in meta}
    note = transform_note(shown, args.target, args.transform)
    if note:
        print(note)
    words = ["## Noise ceiling of the target", "", CEILING_INTRO.format(t=args.target), "",
             *ceiling_words(ceil, corr, args.target), ""]
    health = feature_health_section(args.results, out) if cells is not None else []
    (out / "correlations.md").write_text((note + "\n\n" if note else "")
                                         + to_markdown(corr[[c for c in SHOWN if c in corr]]) + "\n"
                                         + "\n".join(words) + "\n")
    (out / "summary.md").write_text(to_markdown(summ) + "\n" + "\n".join(words + health) + "\n")
    print(to_markdown(corr[[c for c in SHOWN if c in corr]]))
    print("\n".join(words))
    print(to_markdown(summ[["proxy", "n_datasets", "kendall_mean", "weighted_tau_mean", "pearson_mean", "wins"]]
                      if not summ.empty else summ))
    figures = [] if args.no_figures else _figures(out, scores, target, corr, meta, summary, args.target)
    from .analysis import run_analyses
    more, sections = run_analyses(out, args, scores, target, corr, summ, meta,
                                  results=args.results if cells is not None else None)
    figures += more
    if long is not None:  # per-layer records: Fig. 9-style figures and the best-layer table
        from .layer_plots import layer_report
        primary = cells.groupby("protocol").primary.first().to_dict()
        layer_figs, layer_lines = layer_report(out, long, primary, meta, figures=not args.no_figures,
                                                results=args.results)
        figures += layer_figs
        sections = [*sections, *layer_lines]
    if cells is not None:
        _index(out, cells, corr, summ, figures, args, missing_cells(cells), note, [*words, *health, *sections])
    print(f"wrote {out}/correlations.csv, summary.csv and {len(figures)} figure(s)")
    return 0


def _figures(out, scores, target, corr, meta, summary, target_name):
    from . import plots
    figs = []
    style = plots.model_style(list(scores.model) + list(target.model))
    if corr.empty:
        return figs
    plots.scatter_grid(scores, target, corr, style, target_name, out / "scatter_grid.png", meta)
    figs.append("scatter_grid.png")
    figs += [Path(p).name for p in plots.heatmaps(corr, STATISTICS, lambda s: out / f"heatmap_{s}.png")]
    plots.rank_chart(scores, target, meta, style, target_name, out / "rank_chart.png")
    figs.append("rank_chart.png")
    if summary is not None and {"linear", "bn_tune"} <= set(summary.protocol):
        plots.linear_vs_bn_tune(summary, target_name, style, out / "linear_vs_bn_tune.png")
        figs.append("linear_vs_bn_tune.png")
    return figs


def _index(out, cells, corr, summ, figures, args, missing, note="", sections=()):
    ok = cells[cells.status == "ok"]
    lines = ["# Transferability report", "",
             f"Generated {_dt.datetime.now().isoformat(timespec='seconds')} from `{args.results}` by `bench report`.",
             "", "## What was run", "",
             f"- models ({ok.model.nunique()}): {', '.join(sorted(cells.model.unique()))}",
             f"- datasets ({cells.dataset.nunique()}): {', '.join(sorted(cells.dataset.unique()))}",
             f"- protocols: {', '.join(sorted(cells.protocol.unique()))}; target: `{args.target}`",
             f"- seeds: {', '.join(map(str, sorted(cells.seed.unique())))}",
             f"- versions: bench {', '.join(sorted(ok.bench.dropna().unique()))}; torch "
             f"{', '.join(sorted(ok.torch.dropna().unique()))}; timm {', '.join(sorted(ok.timm.dropna().unique()))};"
             f" devices {', '.join(sorted(ok.device.dropna().unique()))}",
             f"- cells: {len(ok)} ok, {int((cells.status == 'error').sum())} error, "
             f"{int((cells.status == 'corrupt').sum())} corrupt (unreadable record files; 'bench run' recomputes them), "
             f"{int((cells.status == 'not_applicable').sum())} not applicable (reasons under Missing cells)",
             *([f"- {note}"] if note else []), "",
             "## Headline: how well each proxy ranks models (mean over datasets)", "",
             "Positive means the proxy agrees with the target; lower-is-better proxies (NC1, CDNV, numerical rank)"
             " are negated first. `wins` counts datasets where the proxy has the highest weighted τ.", ""]
    cols = ["proxy", "n_datasets", "kendall_mean", "weighted_tau_mean", "spearman_mean", "pearson_mean",
            "regret_top1_mean", "wins"]
    lines.append(to_markdown(summ[cols]) if not summ.empty else "_no correlations (target missing?)_\n")
    if "target_can_rank" in corr:
        from .ceiling import cannot_rank
        noisy = sorted(corr[corr.target_can_rank.map(cannot_rank).astype(bool)].dataset.unique())
        if noisy:
            lines += [f"These means include {', '.join(noisy)}, where the target cannot rank the models (see the "
                      f"noise ceiling below): read them with that dataset's τ as noise.", ""]
    lines += ["## Per dataset", "", to_markdown(corr[[c for c in SHOWN if c in corr]]) if not corr.empty else "", ""]
    lines += [*sections]
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    warned = ok[ok.warnings.fillna("") != ""] if "warnings" in ok else ok.iloc[:0]
    if not warned.empty:  # training that ended at chance or below its first epoch: counted, but flagged
        lines += ["## Warnings", "", "These cells are ok records whose training a reader should not trust blindly:",
                  "", to_markdown(warned[["model", "dataset", "protocol", "seed", "warnings"]]), ""]
        print(f"warning: {len(warned)} trained cell(s) carry warnings (chance-level or declining runs); "
              f"see the index's Warnings section")
    lines += ["## Missing cells", ""]
    if missing.empty:
        lines.append("None: every model × dataset × protocol × seed has an ok record.")
    else:
        lines.append(to_markdown(missing[["model", "dataset", "protocol", "layer", "seed", "status", "error"]]))
    (out / "README.md").write_text("\n".join(lines) + "\n")
