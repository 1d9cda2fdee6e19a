"""Layer-wise transferability (Li, Liu et al., neural collapse in transfer, Fig. 9): per model, NC1 and probe
accuracy against depth; accuracy against NC1 across one model's layers with Pearson/Spearman; and the best layer of
each (model, dataset) by each proxy, with the probe accuracy a proxy's pick gives up against the best layer.

Reads the long table of records only (a layer is a column of it); nothing here recomputes a metric.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .load import LAST, seed_summary

NC = "nc1"
ACCURACY = ("linear", "knn")  # probe accuracies drawn against depth and NC1


def layer_means(long: pd.DataFrame, primary: dict) -> pd.DataFrame:
    """model, dataset, protocol, layer, depth, score: seed means of each protocol's primary metric, for every
    (model, dataset) that has a layer other than 'last'. `depth` orders a model's layers ('last' after every
    block; a 'last' record made before layers existed gets the position after the deepest block)."""
    if long.empty or "layer" not in long or (long.layer == LAST).all():
        return pd.DataFrame(columns=["model", "dataset", "protocol", "layer", "depth", "score"])
    has_layers = long[long.layer != LAST][["model", "dataset"]].drop_duplicates()
    part = long.merge(has_layers, on=["model", "dataset"])
    part = part[part.metric == part.protocol.map(primary)]
    mean = seed_summary(part.drop(columns=["layer_index"])).rename(columns={"mean": "score"})
    depth = part.groupby(["model", "dataset", "layer"]).layer_index.max().rename("depth").reset_index()
    mean = mean.merge(depth, on=["model", "dataset", "layer"], how="left")
    deepest = mean[mean.layer != LAST].groupby(["model", "dataset"]).depth.max().rename("deepest").reset_index()
    mean = mean.merge(deepest, on=["model", "dataset"], how="left")
    fill = (mean.layer == LAST) & mean.depth.isna()
    mean.loc[fill, "depth"] = mean.loc[fill, "deepest"] + 1
    return mean[["model", "dataset", "protocol", "layer", "depth", "score"]].sort_values(
        ["dataset", "model", "protocol", "depth"]).reset_index(drop=True)


def nc1_accuracy_correlations(means: pd.DataFrame) -> pd.DataFrame:
    """Across the layers of one model on one dataset: Pearson and Spearman of NC1 against each probe accuracy
    (the paper's claim: lower NC1 goes with higher accuracy, i.e. negative correlations)."""
    from scipy import stats
    rows = []
    for (dataset, model), grp in means.groupby(["dataset", "model"]):
        wide = grp.pivot_table(index="layer", columns="protocol", values="score")
        for acc in ACCURACY:
            if NC not in wide or acc not in wide:
                continue
            both = wide[[NC, acc]].dropna()
            row = {"dataset": dataset, "model": model, "accuracy": acc, "n_layers": len(both),
                   "pearson": float("nan"), "spearman": float("nan")}
            if len(both) >= 3 and both[NC].nunique() > 1 and both[acc].nunique() > 1:
                row["pearson"] = float(stats.pearsonr(both[NC], both[acc])[0])
                row["spearman"] = float(stats.spearmanr(both[NC], both[acc])[0])
            rows.append(row)
    return pd.DataFrame(rows, columns=["dataset", "model", "accuracy", "n_layers", "pearson", "spearman"])


def nc1_depth_trend(means: pd.DataFrame) -> pd.DataFrame:
    """Per model and dataset: Spearman of NC1 against depth over the blocks (negative: NC1 falls with depth)."""
    from scipy import stats
    rows = []
    for (dataset, model), grp in means[(means.protocol == NC) & (means.layer != LAST)].groupby(["dataset", "model"]):
        grp = grp.dropna(subset=["depth", "score"])
        rho = float(stats.spearmanr(grp.depth, grp.score)[0]) if len(grp) >= 3 else float("nan")
        rows.append({"dataset": dataset, "model": model, "n_blocks": len(grp), "spearman_nc1_depth": rho,
                     "nc1_first": grp.score.iloc[0] if len(grp) else float("nan"),
                     "nc1_deepest": grp.score.iloc[-1] if len(grp) else float("nan")})
    return pd.DataFrame(rows)


def best_layers(means: pd.DataFrame, meta: dict, reference: str = "linear") -> pd.DataFrame:
    """Per (model, dataset, proxy): the layer the proxy scores best, the layer the probe `reference` scores best,
    and the probe accuracy lost by taking the proxy's pick (0: the proxy found the best layer to probe)."""
    rows = []
    for (dataset, model), grp in means.groupby(["dataset", "model"]):
        ref = grp[grp.protocol == reference].set_index("layer").score
        best_ref = ref.idxmax() if len(ref.dropna()) else None
        for proxy, p in grp.groupby("protocol"):
            p = p.dropna(subset=["score"])
            if len(p) < 2:  # one layer (a training protocol at 'last'): nothing to choose between
                continue
            higher = getattr(meta.get(proxy), "higher_is_better", True)
            pick = p.loc[p.score.idxmax() if higher else p.score.idxmin()]
            rows.append({"dataset": dataset, "model": model, "proxy": proxy, "best_layer": pick.layer,
                         "best_depth": pick.depth, "score": pick.score, f"{reference}_best_layer": best_ref,
                         f"{reference}_at_pick": ref.get(pick.layer, float("nan")),
                         f"{reference}_regret": (ref.max() - ref.get(pick.layer, float("nan"))) if len(ref) else
                         float("nan"), "n_layers": len(p)})
    return pd.DataFrame(rows)


def _log_axis(axis, values) -> None:
    """Log scale labelled with plain numbers at the 1-2-5 steps inside the data's range (matplotlib's own minor
    labels overlap on short ranges and its major ones can skip the decade)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0], dtype=float)
    if not len(v):
        return
    lo, hi = v.min(), v.max()
    def steps(mantissas):
        return [m * 10.0 ** k for k in range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
                for m in mantissas if lo / 1.05 <= m * 10.0 ** k <= hi * 1.05]
    ticks = steps((1, 2, 5))
    if len(ticks) < 3:  # a range under a decade: every 1..9 step
        ticks = steps(range(1, 10))
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def _short(name: str) -> str:
    return name.replace("blocks.", "b").replace("stages.", "s").replace("layer", "L")


def depth_figure(means: pd.DataFrame, dataset: str, path) -> None:
    """Fig. 9 (left) per model: NC1 (log, left axis) and linear/kNN top-1 (right axis) against depth."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    part = means[means.dataset == dataset]
    models = sorted(part.model.unique())
    cols = min(3, len(models))
    rows = math.ceil(len(models) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows + 0.4), squeeze=False)
    legend = {}
    for ax, model in zip(axes.flat, models):
        grp = part[part.model == model]
        nc = grp[grp.protocol == NC].sort_values("depth")
        ax.plot(nc.depth, nc.score, "o-", color="tab:red", label="NC1 (left)")
        if len(nc):
            ax.set_yscale("log")
            _log_axis(ax.yaxis, nc.score)
        ax.set_ylabel("NC1 on train (log)", color="tab:red")
        ax2 = ax.twinx()
        for acc, colour in zip(ACCURACY, ("tab:blue", "tab:green")):
            a = grp[grp.protocol == acc].sort_values("depth")
            if len(a):
                ax2.plot(a.depth, a.score, "s--", color=colour, label=f"{acc} top-1 (right)")
        ax2.set_ylabel("test top-1 (%)")
        ticks = grp.drop_duplicates("layer").sort_values("depth")
        ax.set_xticks(ticks.depth)
        ax.set_xticklabels([_short(n) for n in ticks.layer], rotation=60, fontsize=8)
        ax.set_xlabel("layer (shallow → deep)")
        ax.set_title(model, fontsize=10)
        for a in (ax, ax2):  # one legend for the figure, above the panels, so no curve is hidden
            for h, lab in zip(*a.get_legend_handles_labels()):
                legend.setdefault(lab, h)
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    fig.suptitle(f"{dataset}: NC1 and probe accuracy against depth", fontsize=12)
    top = 1 - 0.75 / fig.get_figheight()
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend), fontsize=9,
               bbox_to_anchor=(0.5, top - 0.01), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def accuracy_vs_nc1_figure(means: pd.DataFrame, corr: pd.DataFrame, dataset: str, path,
                           accuracy: str = "linear") -> None:
    """Fig. 9 (right) per model: probe accuracy against NC1 across layers, points labelled by layer, with the
    across-layer Pearson r and Spearman ρ in each title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    part = means[means.dataset == dataset]
    have = part.groupby("model").protocol.agg(set)
    models = sorted(m for m, protos in have.items() if {NC, accuracy} <= protos)  # models with both scores
    if not models:
        return
    cols = min(3, len(models))
    rows = math.ceil(len(models) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.9 * rows), squeeze=False)
    for ax, model in zip(axes.flat, models):
        wide = part[part.model == model].pivot_table(index=["layer", "depth"], columns="protocol",
                                                     values="score").reset_index().sort_values("depth")
        if NC in wide and accuracy in wide:
            ax.plot(wide[NC], wide[accuracy], "-", color="0.8", zorder=1)
            sc = ax.scatter(wide[NC], wide[accuracy], c=wide.depth, cmap="viridis", zorder=2)
            for _, r in wide.iterrows():
                ax.annotate(_short(r.layer), (r[NC], r[accuracy]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
            ax.set_xscale("log")
            _log_axis(ax.xaxis, wide[NC])
            fig.colorbar(sc, ax=ax, label="depth (layer position)")
        c = corr[(corr.dataset == dataset) & (corr.model == model) & (corr.accuracy == accuracy)]
        stat = (f"r={c.pearson.iloc[0]:.2f}, ρ={c.spearman.iloc[0]:.2f}" if len(c) and np.isfinite(c.pearson.iloc[0])
                else "r, ρ: n/a")
        ax.set_title(f"{model}\n{stat}", fontsize=10)
        ax.set_xlabel("NC1 on train (log; lower = more collapse)")
        ax.set_ylabel(f"{accuracy} probe test top-1 (%)")
    _finish(fig, axes, len(models), f"{dataset}: {accuracy} accuracy against NC1 across layers", path)


def trained_layer_nc1(results) -> pd.DataFrame:
    """model, dataset, protocol, seed, block (1-based), nc1 (trained), nc1_pretrained: from the `layer_nc1`
    diagnostic of ok training records (`diagnostics: [layer_nc1]`)."""
    from ..records import iter_records
    rows = []
    for _, rec in iter_records(results):
        d = (rec.get("diagnostics") or {}).get("layer_nc1") if rec.get("status") == "ok" else None
        if not d:
            continue
        for k, (t, p) in enumerate(zip(d["trained"], d["pretrained"]), start=1):
            rows.append({"model": rec["model"], "dataset": rec["dataset"], "protocol": rec["protocol"],
                         "seed": rec["seed"], "block": k, "nc1": t, "nc1_pretrained": p,
                         "tuned_block": (rec.get("hyperparameters") or {}).get("block")})
    return pd.DataFrame(rows, columns=["model", "dataset", "protocol", "seed", "block", "nc1", "nc1_pretrained",
                                       "tuned_block"])


def trained_figure(table: pd.DataFrame, dataset: str, path) -> None:
    """Fig. 10: per model, NC1 of every block after each training protocol (seed mean), and the pretrained
    network's (dashed) on the same training images."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    part = table[table.dataset == dataset]
    models = sorted(part.model.unique())
    cols = min(3, len(models))
    rows = math.ceil(len(models) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
    for ax, model in zip(axes.flat, models):
        grp = part[part.model == model]
        pre = grp.groupby("block").nc1_pretrained.mean()
        ax.plot(pre.index, pre.values, "k--", label="pretrained")
        for proto, g in grp.groupby("protocol"):
            m = g.groupby("block").nc1.mean()
            tuned = g.tuned_block.dropna()
            label = proto + (f" (block {int(tuned.iloc[0])})" if len(tuned) and str(tuned.iloc[0]).isdigit() else "")
            ax.plot(m.index, m.values, "o-", label=label)
        ax.set_yscale("log")
        _log_axis(ax.yaxis, list(grp.nc1) + list(grp.nc1_pretrained))
        ax.set_xlabel("block (shallow → deep)")
        ax.set_ylabel("NC1 on train (log)")
        ax.set_title(model, fontsize=10)
        ax.legend(fontsize=7)
    _finish(fig, axes, len(models), f"{dataset}: layer-wise NC1 after training", path)


def layer_report(out, long: pd.DataFrame, primary: dict, meta: dict, figures: bool = True, results=None):
    """Writes layers_means.csv, layers_best.csv, layers_nc1_accuracy.csv, layers_nc1_depth.csv, with Layer-FT /
    SCL-FT block sweeps layers_block_choice.csv, and the figures;
    returns (figure file names, README section lines). Nothing when no record has a layer other than 'last'."""
    from .tables import to_markdown
    figs, lines = [], []
    trained = trained_layer_nc1(results) if results is not None else pd.DataFrame()
    if not trained.empty:
        trained.to_csv(out / "layers_trained_nc1.csv", index=False)
        for dataset in sorted(trained.dataset.unique()) if figures else []:
            trained_figure(trained, dataset, out / f"layers_trained_nc1_{dataset}.png")
            figs.append(f"layers_trained_nc1_{dataset}.png")
        lines += ["## Layer-wise NC1 after training", "", "Per-block NC1 on the training split (`diagnostics: "
                  "[layer_nc1]`), trained and pretrained, in `layers_trained_nc1.csv`.", ""]
    means = layer_means(long, primary)
    if means.empty:
        return figs, lines
    corr, trend, best = nc1_accuracy_correlations(means), nc1_depth_trend(means), best_layers(means, meta)
    means.to_csv(out / "layers_means.csv", index=False)
    best.to_csv(out / "layers_best.csv", index=False)
    corr.to_csv(out / "layers_nc1_accuracy.csv", index=False)
    trend.to_csv(out / "layers_nc1_depth.csv", index=False)
    if figures:
        for dataset in sorted(means.dataset.unique()):
            depth_figure(means, dataset, out / f"layers_depth_{dataset}.png")
            figs.append(f"layers_depth_{dataset}.png")
            if NC in set(means.protocol):
                for acc in [a for a in ACCURACY if a in set(means[means.dataset == dataset].protocol)]:
                    name = f"layers_{acc}_vs_nc1_{dataset}.png"
                    accuracy_vs_nc1_figure(means, corr, dataset, out / name, acc)
                    if (out / name).exists():
                        figs.append(name)
    lines += ["## Layers", "",
             "Frozen-feature proxies per layer (`layers:`); `last` is the pooled penultimate output the model "
             "tables above use. NC1 against depth (Spearman over blocks; negative: NC1 falls with depth):", "",
             to_markdown(trend), "",
             "Across the layers of each model, NC1 against probe accuracy (negative: accuracy rises as NC1 falls):",
             "", to_markdown(corr), "",
             "Best layer per (model, dataset) by each proxy; `linear_regret`: linear-probe points lost by probing "
             "the proxy's pick instead of the best layer:", "",
             to_markdown(best.drop(columns=["best_depth"])), ""]
    if results is not None:
        from .block_choice import block_choice_summary, block_choice_table, block_sweeps
        choice = block_choice_table(best, *block_sweeps(results))
        if not choice.empty:
            choice.to_csv(out / "layers_block_choice.csv", index=False)
            lines += ["Each proxy's best layer as the block to tune (Layer-FT / SCL-FT cells that swept `block`; "
                      "`regret`: validation points lost by tuning the pick instead of the best swept block; "
                      "`layers_block_choice.csv` per model):", "", to_markdown(block_choice_summary(choice)), ""]
    return figs, lines


def _finish(fig, axes, used: int, title: str, path) -> None:
    """Hide the grid's unused panels, title the figure, lay it out and write it."""
    import matplotlib.pyplot as plt  # lazily, as the figure functions import it
    for ax in list(axes.flat)[used:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
