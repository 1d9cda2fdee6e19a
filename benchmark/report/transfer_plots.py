"""Figures of the transfer diagnostics (CKA per block, module criticality per block, performance barrier) from
the `diagnostics.transfer` of trained records; random-init twins (`pretrained: false`) drawn dashed."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..paths import safe_file_name, under
from ..records import iter_records


def load_transfer(root) -> pd.DataFrame:
    rows = []
    for _, rec in iter_records(root):
        tr = ((rec.get("diagnostics") or {}).get("transfer")) if rec.get("status") == "ok" else None
        if tr:
            pretrained = ((rec.get("config") or {}).get("model") or {}).get("pretrained", True)
            rows.append({"model": rec["model"], "dataset": rec["dataset"], "protocol": rec["protocol"],
                         "seed": rec["seed"], "pretrained": bool(pretrained), **{k: tr.get(k) for k in
                                                                               ("cka", "criticality", "barrier")}})
    return pd.DataFrame(rows, columns=["model", "dataset", "protocol", "seed", "pretrained", "cka", "criticality",
                                       "barrier"])


def transfer_section(out, root, draw=True) -> tuple[list, list]:
    t = load_transfer(root)
    if t.empty:
        return [], []
    figs, md = [], ["## What is being transferred (Neyshabur et al. 2020)", ""]
    for key, fn in (("cka", _per_block_plot), ("criticality", _per_block_plot), ("barrier", _barrier_plot)):
        sub = t[t[key].map(lambda v: isinstance(v, (list, dict)) and bool(v))]
        if key == "barrier":
            sub = sub[sub[key].map(lambda v: "t" in v)]
        if sub.empty:
            continue
        if draw:
            for (dataset, protocol), g in sub.groupby(["dataset", "protocol"]):
                # names read from record files: made file-safe and kept under the report folder
                name = f"transfer_{key}_{safe_file_name(dataset)}_{safe_file_name(protocol)}.png"
                fn(g, key, dataset, protocol, under(out, name, what="figure"))
                figs.append(name)
        if key == "barrier":
            for r in sub.itertuples():
                b = r.barrier
                md.append(f"- {r.model} × {r.dataset} × {r.protocol}: seeds {b['other_seed']}↔{r.seed}, loss barrier "
                          f"{b['loss_barrier']:.3f}, top-1 barrier {b['top1_barrier']:.2f} points"
                          + ("" if r.pretrained else " (random init)"))
    md += ["", "Figures `transfer_cka_*`, `transfer_criticality_*`, `transfer_barrier_*`.", ""]
    return figs, md


def _style(models, pretrained):
    import seaborn as sns
    pal = sns.color_palette("tab10", max(len(models), 1))
    return {m: (pal[i % 10], "-" if p else "--") for i, (m, p) in enumerate(zip(models, pretrained))}


def _per_block_plot(g, key, dataset, protocol, path):
    import matplotlib.pyplot as plt
    g = g.sort_values(["model", "seed"]).drop_duplicates("model")
    style = _style(list(g.model), list(g.pretrained))
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for r in g.itertuples():
        v = getattr(r, key)
        y = v if key == "cka" else [c["alpha_min"] for c in v]
        c, ls = style[r.model]
        ax.plot(range(1, len(y) + 1), y, marker="o", color=c, ls=ls, lw=1.6,
                label=r.model + ("" if r.pretrained else " (random init)"))
    ax.set_xlabel("block (input → output)")
    ax.set_ylabel("linear CKA, initial vs trained features" if key == "cka" else "smallest α keeping top-1 (criticality)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{'Feature similarity' if key == 'cka' else 'Module criticality'} per block · {dataset} · {protocol}",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _barrier_plot(g, key, dataset, protocol, path):
    import matplotlib.pyplot as plt
    style = _style(list(g.model), list(g.pretrained))
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2))
    for r in g.itertuples():
        b, (c, ls) = r.barrier, style[r.model]
        label = f"{r.model} (t=0: seed {r.seed}, t=1: seed {b['other_seed']})" + ("" if r.pretrained else
                                                                                  ", random init")
        for ax, k in zip(axes, ("loss", "top1")):
            ax.plot(np.asarray(b["t"]), b[k], marker="o", ms=4, color=c, ls=ls, lw=1.6, label=label)
    axes[0].set_ylabel("test cross-entropy")
    axes[1].set_ylabel("test top-1 (%)")
    for ax in axes:
        ax.set_xlabel("t on the path (1 − t)·θ(t=0 seed) + t·θ(t=1 seed)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle(f"Performance barrier between two fine-tunes · {dataset} · {protocol}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
