"""The target's noise ceiling: how well a ranking of the models by the target at one seed agrees with the
ranking at another seed. Every correlation the report prints is against the target, so its own seed-to-seed
agreement bounds what any proxy can show.

Per dataset, from the target's per-seed scores (model, dataset, seed, target):
- `target_seeds`: the number of distinct seeds with target scores;
- `target_seed_sd`: the mean over models (with >= 2 seeds) of the target's sample sd across seeds;
- `target_model_sd`: the sd over models of the target's seed mean (the between-model spread);
- `ceiling_kendall`: the mean over all pairs of distinct seeds (a, b) of scipy's Kendall τ-b between the models'
  target scores at seed a and at seed b (models with both seeds; a pair where one seed is constant is left out);
- `target_can_rank`: False where the ceiling is below 0.5 or the between-model spread is below the seed sd, True
  otherwise, missing with one seed (unknown).
A proxy's τ is "within the ceiling's reach" when τ >= ceiling or the ceiling lies inside τ's bootstrap interval:
the target then cannot tell the proxy from one that ranks the models perfectly.
"""
from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

MIN_CEILING = 0.5  # below this, two seeds of the target disagree on too many model pairs to rank models
CEILING_COLUMNS = ["target_seeds", "target_seed_sd", "target_model_sd", "ceiling_kendall", "ceiling_pairs",
                   "target_can_rank"]


def cannot_rank(v) -> bool:
    """True only for a definite False verdict (None/NaN: unknown; numpy and Python booleans alike)."""
    return v is not None and not (isinstance(v, float) and np.isnan(v)) and not bool(v)


def _kendall(a, b) -> float:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.kendalltau(a, b, variant="b").statistic)


def dataset_ceiling(per_seed: pd.DataFrame) -> dict:
    """The ceiling columns of one dataset; `per_seed`: model, seed, target (one row per model and seed)."""
    wide = per_seed.pivot_table(index="model", columns="seed", values="target", aggfunc="mean")
    seeds = list(wide.columns)
    sd = wide.std(axis=1, ddof=1)  # NaN for a model with one seed
    means = wide.mean(axis=1)
    taus = []
    for a, b in itertools.combinations(seeds, 2):
        both = wide[[a, b]].dropna()
        taus.append(_kendall(both[a].to_numpy(), both[b].to_numpy()))
    finite = [t for t in taus if np.isfinite(t)]
    row = {"target_seeds": len(seeds), "n_models": len(wide),
           "target_seed_sd": float(sd.mean()) if sd.notna().any() else np.nan,
           "target_model_sd": float(means.std(ddof=1)) if len(means) > 1 else np.nan,
           "ceiling_kendall": float(np.mean(finite)) if finite else np.nan, "ceiling_pairs": len(finite)}
    row["target_can_rank"] = can_rank(row)
    return row


def can_rank(row) -> bool | None:
    """None (unknown) with one seed; False when the ceiling is below MIN_CEILING or the model differences are
    below the seed sd; True otherwise."""
    c, s, m = row["ceiling_kendall"], row["target_seed_sd"], row["target_model_sd"]
    if row["target_seeds"] < 2 or not np.isfinite(c):
        return None
    return bool(c >= MIN_CEILING and not (np.isfinite(s) and np.isfinite(m) and m < s))


def ceiling_table(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset; `per_seed`: model, dataset, seed, target."""
    cols = ["dataset", "n_models", *CEILING_COLUMNS]
    if per_seed is None or per_seed.empty:
        return pd.DataFrame(columns=cols)
    rows = [{"dataset": d, **dataset_ceiling(g)} for d, g in per_seed.groupby("dataset", sort=True)]
    return pd.DataFrame(rows, columns=cols)


def add_ceiling(corr: pd.DataFrame, ceil: pd.DataFrame) -> pd.DataFrame:
    """correlations.csv's rows with the dataset's ceiling columns and `vs_ceiling`, the row in words."""
    if corr.empty:
        return corr
    out = corr.merge(ceil.drop(columns=["n_models"], errors="ignore"), on="dataset", how="left")
    out["vs_ceiling"] = [vs_ceiling(r) for r in out.to_dict("records")]
    return out


def vs_ceiling(r: dict) -> str:
    seeds = r.get("target_seeds")
    if seeds is None or not np.isfinite(seeds) or seeds < 2 or not np.isfinite(r.get("ceiling_kendall", np.nan)):
        return "ceiling unknown"
    if cannot_rank(r.get("target_can_rank")):
        return "target cannot rank"
    tau, hi, c = r.get("kendall", np.nan), r.get("kendall_hi", np.nan), r["ceiling_kendall"]
    if not np.isfinite(tau):
        return "no τ"
    return "within reach" if tau >= c or (np.isfinite(hi) and hi >= c) else "below ceiling"


def seeds_to_add(row) -> str:
    """How many seeds of the target to add, in words."""
    n = int(row["target_seeds"]) if np.isfinite(row["target_seeds"]) else 0
    if n < 2:
        return (f"add {3 - n} seed(s) of the target ({3} in all: 3 pairs of seeds) to measure it"
                f"{'' if n else ' (no target scores here)'}")
    s, m = row["target_seed_sd"], row["target_model_sd"]
    if np.isfinite(s) and np.isfinite(m) and m > 0 and m < s:
        # averaging k seeds shrinks the seed noise of a model's mean by √k: k with s/√k < m
        k = math.ceil((s / m) ** 2) + 1
        if k <= n:  # the seed mean the correlations use is already steadier than one seed
            return (f"the mean over the {n} seeds the correlations use has noise ≈ {s / math.sqrt(n):.2g} "
                    f"({s:.2g}/√{n}), below the model spread ({m:.2g}), so it ranks better than any one seed does; "
                    f"read its τ as weak evidence")
        return f"the seed mean of ~{k} seeds would bring the noise ({s:.2g}/√k) below the model spread ({m:.2g})"
    return "more seeds sharpen the ceiling's estimate" if n == 2 else ""


def ceiling_words(ceil: pd.DataFrame, corr: pd.DataFrame, target_name: str) -> list[str]:
    """One bullet per dataset: the ceiling, and which proxies reach it or whether the target can rank at all."""
    if ceil.empty:
        return [f"- No `{target_name}` scores per seed: the noise ceiling is unknown."]
    lines = []
    for r in ceil.to_dict("records"):
        d = r["dataset"]
        here = corr[corr.dataset == d] if not corr.empty else corr
        v = r["target_can_rank"]
        if v is None or (isinstance(v, float) and np.isnan(v)):
            lines.append(f"- **{d}**: ceiling unknown — {int(r['target_seeds'])} seed of `{target_name}`; "
                         f"{seeds_to_add(r)}. Until then no τ here can be judged against the target's own noise.")
            continue
        head = (f"- **{d}**: ceiling τ = {r['ceiling_kendall']:.2f} (mean Kendall τ-b between the model rankings "
                f"of {int(r['ceiling_pairs'])} pair(s) of `{target_name}` seeds, {int(r['target_seeds'])} seeds); "
                f"seed sd {r['target_seed_sd']:.2g} vs between-model sd {r['target_model_sd']:.2g}.")
        if cannot_rank(r["target_can_rank"]):
            why = (f"the ceiling is below {MIN_CEILING}" if r["ceiling_kendall"] < MIN_CEILING
                   else "the models differ by less than one seed's noise")
            more = seeds_to_add(r)
            lines.append(f"{head} **The target cannot rank the models here** ({why}): every proxy's τ on this "
                         f"dataset is mostly seed noise{'; ' + more if more else ''}.")
            continue
        reach = sorted(here[here.vs_ceiling == "within reach"].proxy) if "vs_ceiling" in here else []
        below = sorted(here[here.vs_ceiling == "below ceiling"].proxy) if "vs_ceiling" in here else []
        parts = []
        if reach:
            parts.append(f"Within the ceiling's reach (the target cannot tell them from a perfect ranking): "
                         f"{', '.join(reach)}")
        if below:
            parts.append(f"{'below it' if reach else 'Below it'} (room to improve that the target can see): "
                         f"{', '.join(below)}")
        lines.append(f"{head} " + ("; ".join(parts) + "." if parts else "No proxy τ to compare."))
    return lines
