"""A published long table (model, dataset, metric, value, optionally seed) read for `bench report --table`: every
row checked, every metric's direction and scale taken from the flags or its name, never guessed silently. With a
`seed` column, scores are averaged over seeds and the target's per-seed values feed the noise ceiling."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, unknown_name
from .tables import ProxyMeta

NEED = ("model", "dataset", "metric", "value")
PERCENT_SUFFIXES = ("acc", "top1")  # names recognised as accuracies in %


def _flag_list(value: str | None) -> list[str]:
    return [m.strip() for m in (value or "").split(",") if m.strip()]


def _rows(df: pd.DataFrame, mask) -> str:
    """'rows 3, 7 (m × d × acc)' for the file lines (header = line 1) of the masked rows, the first few named."""
    idx = mask.to_numpy().nonzero()[0]
    named = ", ".join(f"line {i + 2} ({df.model.iloc[i]} × {df.dataset.iloc[i]} × {df.metric.iloc[i]})"
                      for i in idx[:3])
    return named + (f" and {len(idx) - 3} more" if len(idx) > 3 else "")


def read_table(path) -> pd.DataFrame:
    """The table with a numeric `value` column; malformed files, non-numeric or non-finite values and repeated
    (model, dataset, metric[, seed]) rows -> ConfigError naming the rows. An empty value is a missing number."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: table not found")
    try:  # everything as text: 'nan', 'NA' or 'null' are then what the file says, not pandas' missing values
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path}: malformed CSV ({first}); it needs one header row {','.join(NEED)} and "
                          f"one row per model, dataset and metric") from None
    if not set(NEED) <= set(df.columns):
        raise ConfigError(f"{path}: needs columns {list(NEED)}, has {list(df.columns)}")
    if df.empty:
        raise ConfigError(f"{path}: has a header but no rows; add one row per model, dataset and metric")
    for col in ("model", "dataset", "metric"):
        empty = df[col].str.strip() == ""
        if empty.any():
            i = int(empty.to_numpy().nonzero()[0][0])
            raise ConfigError(f"{path}:{i + 2}: empty {col}; every row needs a model, dataset and metric")
    text = df.value.str.strip()
    values = pd.to_numeric(text.where(text != ""), errors="coerce")
    nonfinite = values.isin([np.inf, -np.inf]) | text.str.lower().isin(["nan", "+nan", "-nan"])
    if nonfinite.any():
        raise ConfigError(f"{path}: {_rows(df, nonfinite)}: value is not finite (NaN or inf); a NaN/inf score is "
                          f"never a result — fix the number, or leave the value empty if it is missing")
    bad = values.isna() & (text != "")
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise ConfigError(f"{path}:{i + 2}: value {df.value.iloc[i]!r} of {df.model.iloc[i]} × {df.dataset.iloc[i]}"
                          f" × {df.metric.iloc[i]} is not a number ({int(bad.sum())} such row(s)); fix or empty it")
    for col in ("model", "dataset", "metric"):
        if df[col].isna().any():
            i = int(df[col].isna().to_numpy().nonzero()[0][0])
            raise ConfigError(f"{path}:{i + 2}: empty {col}; every row needs a model, dataset and metric")
    has_seed = "seed" in df.columns
    if has_seed:  # repeated runs: scores become seed means, and the target's seeds give the noise ceiling
        seeds = pd.to_numeric(df.seed, errors="coerce")
        if seeds.isna().any():
            i = int(seeds.isna().to_numpy().nonzero()[0][0])
            raise ConfigError(f"{path}:{i + 2}: seed {df.seed.iloc[i]!r} is not a number; the seed column holds "
                              f"integers (or drop the column for one seed)")
        df = df.assign(seed=seeds.astype(int))
    else:
        df = df.assign(seed=0)
    key = ["model", "dataset", "metric"] + (["seed"] if has_seed else [])
    dup = df.duplicated(key, keep=False)
    if dup.any():
        raise ConfigError(f"{path}: {_rows(df, dup)}: the same ({', '.join(key)}) appears on more than one row; "
                          f"keep one row per {', '.join(key)}" + ("" if has_seed else
                                                                  " (or add a seed column for repeated runs)"))
    return df.assign(value=values)


def _check_percent(df: pd.DataFrame, metric: str, path, why: str) -> None:
    vals = df.value[df.metric == metric].dropna()
    outside = vals[(vals < 0) | (vals > 100)]
    if len(outside):
        raise ConfigError(f"{path}: metric '{metric}' is treated as a percentage ({why}) but has values outside "
                          f"[0, 100] (e.g. {outside.iloc[0]:g}); --transform logit needs percentages — rescale it "
                          f"or drop it from --percent")


def scores_from_table(args):
    """(scores, target, meta, the target per seed) from args.table, seed means where there is a `seed` column;
    --percent names metrics in % on top of the recognised names."""
    df = read_table(args.table)
    metrics = sorted(df.metric.unique())
    if args.target not in metrics:
        raise unknown_name("target metric", args.target, metrics, str(args.table))
    available = sorted(set(metrics) - {args.target})
    proxies = _flag_list(args.proxy or args.proxies) or available
    lower, percent = _flag_list(args.lower_is_better), _flag_list(getattr(args, "percent", ""))
    for flag, names in (("--proxy", proxies), ("--lower-is-better", lower), ("--percent", percent)):
        for name in names:
            if name not in metrics:
                raise unknown_name("metric", name, metrics, f"{args.table}: {flag}")
    meta = {p: ProxyMeta(p not in lower, p in percent or p.endswith(PERCENT_SUFFIXES)) for p in proxies}
    if args.transform == "logit":
        for p in proxies:
            if meta[p].percent:
                _check_percent(df, p, args.table, "--percent" if p in percent else "its name")
        _check_percent(df, args.target, args.table, "the target")
    per_seed = df[df.metric == args.target][["model", "dataset", "seed", "value"]].rename(columns={"value": "target"})
    target = per_seed.groupby(["model", "dataset"], as_index=False, sort=True).target.mean()
    scores = (df[df.metric.isin(proxies)].groupby(["model", "dataset", "metric"], as_index=False, sort=True).value
              .mean().rename(columns={"metric": "proxy", "value": "score"}))
    return scores[["model", "dataset", "proxy", "score"]], target, meta, per_seed.dropna(subset=["target"])


def transform_note(meta: dict, target_name: str, transform: str) -> str:
    """One line saying which metrics --transform changed and which it left alone (empty when none)."""
    if transform != "logit":
        return ""
    done = sorted(p for p, m in meta.items() if m.percent)
    left = sorted(p for p, m in meta.items() if not m.percent)
    note = (f"--transform logit: logit(v/100) before Pearson on the target '{target_name}'"
            f"{' and on ' + ', '.join(done) if done else ''}")
    if left:
        note += f"; left as is (not percentages): {', '.join(left)} (a --table metric in % is named with --percent)"
    return note + "."
