"""Figures from tables only (plotting never recomputes a metric). One colour per model across every figure."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

MARKERS = "osD^vP*Xh<>p"


def model_style(models) -> dict:
    models = sorted(set(models))
    palette = sns.color_palette("tab10" if len(models) <= 10 else "tab20", len(models))
    return {m: (palette[i], MARKERS[i % len(MARKERS)]) for i, m in enumerate(models)}


def _legend(fig, style, ncol=None):
    handles = [plt.Line2D([], [], color=c, marker=mk, linestyle="", markersize=7, label=m)
               for m, (c, mk) in style.items()]
    fig.legend(handles=handles, loc="lower center", ncol=ncol or min(len(handles), 5), frameon=False, fontsize=9,
               bbox_to_anchor=(0.5, 0.0))


def scatter_grid(scores, target, corr, style, target_name, path, meta=None):
    """One panel per dataset x proxy: proxy score against target accuracy, tau in the title."""
    datasets, proxies = sorted(scores.dataset.unique()), sorted(scores.proxy.unique())
    height = 3.0 * len(datasets) + 0.5  # 0.45 in at the bottom for the one-row legend, no more
    fig, axes = plt.subplots(len(datasets), len(proxies), figsize=(3.2 * len(proxies), height), squeeze=False)
    for i, d in enumerate(datasets):
        for j, p in enumerate(proxies):
            ax = axes[i, j]
            both = scores[(scores.dataset == d) & (scores.proxy == p)].merge(target, on=["model", "dataset"])
            for r in both.itertuples():
                c, mk = style[r.model]
                ax.scatter(r.score, r.target, color=c, marker=mk, s=45, edgecolor="black", linewidth=0.4)
            row = corr[(corr.dataset == d) & (corr.proxy == p)]
            tau = row.kendall.iloc[0] if len(row) else np.nan
            wt = row.weighted_tau.iloc[0] if len(row) else np.nan
            ax.set_title(f"{d} · {p}\nτ={tau:.2f}  τw={wt:.2f}  n={len(both)}", fontsize=9)
            ax.tick_params(labelsize=8)
            if i == len(datasets) - 1:
                lower = meta is not None and p in meta and not meta[p].higher_is_better
                ax.set_xlabel(f"{p} (lower is better; τ oriented)" if lower else p, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{target_name} top-1 (%)", fontsize=9)
    _legend(fig, style)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return len(datasets) * len(proxies)


def heatmaps(corr, statistics, path_for):
    """Proxy x dataset heatmap of each statistic, diverging around zero."""
    paths = []
    for s in statistics:
        table = corr.pivot(index="proxy", columns="dataset", values=s)
        fig, ax = plt.subplots(figsize=(1.3 * table.shape[1] + 2.5, 0.55 * table.shape[0] + 1.8))
        sns.heatmap(table, annot=True, fmt=".2f", cmap="RdBu_r", vmin=-1, vmax=1, center=0, ax=ax,
                    cbar_kws={"label": s}, annot_kws={"fontsize": 9})
        ax.set_title(f"{s} between proxy and target (positive = agrees)", fontsize=10)
        ax.set_xlabel("")
        ax.set_ylabel("")
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
        fig.tight_layout()
        fig.savefig(path_for(s), dpi=120)
        plt.close(fig)
        paths.append(path_for(s))
    return paths


def linear_vs_bn_tune(summary, target_name, style, path, probes=("linear", "bn_tune")):
    """The BN-tuning paper's figure: each probe's accuracy against fine-tune accuracy, side by side."""
    from scipy.stats import kendalltau
    tgt = summary[summary.protocol == target_name][["model", "dataset", "mean"]].rename(columns={"mean": "target"})
    datasets = sorted(tgt.dataset.unique())
    dmark = {d: MARKERS[i % len(MARKERS)] for i, d in enumerate(datasets)}
    fig, axes = plt.subplots(1, len(probes), figsize=(5.2 * len(probes), 5.0), sharey=True, squeeze=False)
    for ax, probe in zip(axes[0], probes):
        x = summary[summary.protocol == probe][["model", "dataset", "mean"]].merge(tgt, on=["model", "dataset"])
        for r in x.itertuples():
            ax.scatter(r.mean, r.target, color=style[r.model][0], marker=dmark[r.dataset], s=55, edgecolor="black",
                       linewidth=0.4)
        taus = [kendalltau(g["mean"], g.target).statistic for _, g in x.groupby("dataset") if len(g) > 1]
        lim = [min(x["mean"].min(), x.target.min()) - 2, max(x["mean"].max(), x.target.max()) + 2] if len(x) else [0, 100]
        ax.plot(lim, lim, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(f"{probe} top-1 (%)")
        ax.set_title(f"{probe} vs {target_name}: mean per-dataset τ = {np.nanmean(taus) if taus else np.nan:.2f}")
    axes[0, 0].set_ylabel(f"{target_name} top-1 (%)")
    handles = [plt.Line2D([], [], color=c, marker="o", linestyle="", label=m) for m, (c, _) in style.items()]
    handles += [plt.Line2D([], [], color="black", marker=mk, linestyle="", label=d, markerfacecolor="none")
                for d, mk in dmark.items()]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.12 + 0.03 * (len(handles) // 6), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def rank_chart(scores, target, meta, style, target_name, path):
    """Per dataset: each model's rank under the target and under each proxy (1 = best), joined by lines."""
    datasets = sorted(scores.dataset.unique())
    proxies = sorted(scores.proxy.unique())
    cols = [target_name] + proxies
    ncols = min(2, len(datasets))
    nrows = -(-len(datasets) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=((0.7 * len(cols) + 2.5) * ncols, 4.2 * nrows + 0.8),
                             squeeze=False)
    for ax in axes.flat[len(datasets):]:
        ax.set_visible(False)
    for ax, d in zip(axes.flat, datasets):
        t = target[target.dataset == d].set_index("model").target
        ranks = pd.DataFrame({target_name: t.rank(ascending=False, method="min")})
        for p in proxies:
            s = scores[(scores.dataset == d) & (scores.proxy == p)].set_index("model").score
            hib = meta[p].higher_is_better if p in meta else True
            ranks[p] = s.rank(ascending=not hib, method="min")
        for model, row in ranks.iterrows():
            c, mk = style[model]
            ax.plot(range(len(cols)), row[cols].to_numpy(dtype=float), color=c, marker=mk, lw=1.6, ms=7)
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels(cols, rotation=30, ha="right", fontsize=9)
        ax.set_ylim(len(ranks) + 0.5, 0.5)
        ax.set_yticks(range(1, len(ranks) + 1))
        ax.set_ylabel("rank (1 = best)")
        ax.set_title(d)
        ax.grid(axis="y", alpha=0.3)
    _legend(fig, style, ncol=min(len(style), 3))
    fig.tight_layout(rect=(0, 0.9 / (4.2 * nrows + 0.8), 1, 1))  # 0.9 in for the legend
    fig.savefig(path, dpi=120)
    plt.close(fig)
