"""Cross-domain correlation: a proxy measured on dataset A against the target on dataset B, for every pair.

The in-domain diagonal (A = B) is `correlations.csv`; off the diagonal is the question of Marks et al. (IJCV 2025)
and of Kornblith et al. / Ericsson et al. ("does ImageNet accuracy predict downstream fine-tuning?"). Published
numbers from the zoo's `meta:` enter as proxies measured on a named dataset (`imagenet_top1` = `top1` on
`imagenet`), so they appear here as extra rows of the proxy-dataset axis.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .stats import STATISTICS, correlations
from .tables import ProxyMeta

# Dataset-free properties of an architecture: measured on no dataset, reported with proxy_dataset "model".
MODEL_PROPERTIES = ("params_m", "gflops")
CROSS_COLUMNS = ["proxy", "proxy_dataset", "target_dataset", "in_domain", "n", *STATISTICS]


def split_meta_key(key: str) -> tuple[str, str]:
    """`imagenet_top1` -> ('imagenet', 'top1'); `params_m` -> ('model', 'params_m')."""
    if key in MODEL_PROPERTIES:
        return "model", key
    dataset, _, metric = key.partition("_")
    return dataset, metric


def meta_scores(zoo, known: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Zoo `meta:` numbers as (scores: model, dataset, proxy, score; ProxyMeta per proxy). All higher-is-better
    (accuracies; bigger models) unless the metric names a known lower-is-better proxy in `known`."""
    rows, meta = [], {}
    for m in zoo.models:
        for key, value in (m.meta or {}).items():
            where = f"{zoo.path}: model '{m.name}': meta '{key}'"
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where} must be a number, got {value!r}; write e.g. 'imagenet_top1: 76.1'")
            dataset, metric = split_meta_key(str(key))
            if not metric:
                raise ConfigError(f"{where}: name it '<dataset>_<metric>' (imagenet_top1) or one of "
                                  f"{', '.join(MODEL_PROPERTIES)}")
            rows.append({"model": m.name, "dataset": dataset, "proxy": metric, "score": float(value)})
            meta.setdefault(metric, (known or {}).get(metric) or ProxyMeta(True, key not in MODEL_PROPERTIES))
    return pd.DataFrame(rows, columns=["model", "dataset", "proxy", "score"]), meta


def cross_table(scores: pd.DataFrame, target: pd.DataFrame, meta: dict, transform: str = "none") -> pd.DataFrame:
    """One row per (proxy, proxy dataset, target dataset): the four statistics over the models both share."""
    rows = []
    for (proxy, pdata), grp in scores.dropna(subset=["score"]).groupby(["proxy", "dataset"], sort=True):
        m = meta.get(proxy, ProxyMeta())
        for tdata, tgt in target.dropna(subset=["target"]).groupby("dataset", sort=True):
            both = grp[["model", "score"]].merge(tgt[["model", "target"]], on="model").sort_values("model")
            oriented = both.score.to_numpy(dtype=float) * (1 if m.higher_is_better else -1)
            kw = dict(logit_score=transform == "logit" and m.percent, logit_target=transform == "logit")
            rows.append({"proxy": proxy, "proxy_dataset": pdata, "target_dataset": tdata,
                         "in_domain": pdata == tdata, "n": len(both),
                         **correlations(oriented, both.target.to_numpy(dtype=float), **kw)})
    return pd.DataFrame(rows, columns=CROSS_COLUMNS)


def cross_summary(cross: pd.DataFrame, stat: str = "kendall") -> pd.DataFrame:
    """Per proxy: mean statistic in domain and off domain (how well a proxy generalises across datasets)."""
    if cross.empty:
        return pd.DataFrame(columns=["proxy", f"{stat}_in_domain", f"{stat}_off_domain", "n_off_pairs"])
    proxies = sorted(cross.proxy.unique())
    ind = cross[cross.in_domain].groupby("proxy")[stat].mean()
    off = cross[~cross.in_domain].groupby("proxy")[stat].agg(["mean", "count"])
    out = pd.DataFrame({f"{stat}_in_domain": ind.reindex(proxies), f"{stat}_off_domain": off["mean"].reindex(proxies),
                        "n_off_pairs": off["count"].reindex(proxies).fillna(0).astype(int)})
    out.index.name = "proxy"
    return out.sort_values(f"{stat}_off_domain", ascending=False).reset_index()


def cross_heatmaps(cross: pd.DataFrame, path_for, stat: str = "kendall") -> list:
    """Per proxy: proxy dataset (rows) x target dataset (columns), in-domain cells outlined."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.patches import Rectangle
    paths = []
    for proxy, grp in cross.groupby("proxy", sort=True):
        table = grp.pivot(index="proxy_dataset", columns="target_dataset", values=stat)
        # target datasets first in column order (the diagonal stays a diagonal), other sources (imagenet) below
        rows = [c for c in table.columns if c in table.index] + [r for r in table.index if r not in table.columns]
        table = table.loc[rows]
        fig, ax = plt.subplots(figsize=(1.2 * table.shape[1] + 3.0, 0.6 * table.shape[0] + 2.0))
        sns.heatmap(table, annot=True, fmt=".2f", cmap="RdBu_r", vmin=-1, vmax=1, center=0, ax=ax,
                    cbar_kws={"label": stat}, annot_kws={"fontsize": 9})
        for i, r in enumerate(table.index):
            if r in table.columns:
                ax.add_patch(Rectangle((list(table.columns).index(r), i), 1, 1, fill=False, lw=2, ec="black"))
        ax.set_title(f"{proxy} on (rows) predicting the target on (columns): {stat}\n"
                     f"outlined = in domain", fontsize=10)
        ax.set_xlabel("target dataset")
        ax.set_ylabel(f"{proxy} measured on")
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
        plt.setp(ax.get_yticklabels(), rotation=0)
        fig.tight_layout()
        path = path_for("".join(c if c.isalnum() or c in "-_." else "_" for c in proxy))
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def generalisation_words(summ: pd.DataFrame, stat: str = "kendall") -> list[str]:
    out = []
    for r in summ.itertuples():
        ind, off = getattr(r, f"{stat}_in_domain"), getattr(r, f"{stat}_off_domain")
        if np.isfinite(off):
            out.append(f"- `{r.proxy}`: mean {stat} {off:.2f} off domain over {r.n_off_pairs} dataset pair(s)"
                       + (f", {ind:.2f} in domain" if np.isfinite(ind) else " (no in-domain measurement)"))
    return out
