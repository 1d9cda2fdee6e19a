"""A published long table (model, dataset, metric, value, optionally seed) read for `bench report --table`: every
row checked, every metric's direction and scale taken from the flags or its name, never guessed silently. With a
`seed` column, scores are averaged over seeds and the target's per-seed values feed the noise ceiling."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import ConfigError, unknown_name
from .tables import ProxyMeta

NEED = ("model", "dataset", "metric", "value")
PERCENT_SUFFIXES = ("acc", "top1")  # names recognised as accuracies in %


def _flag_list(value: str | None) -> list[str]:
    return [m.strip() for m in (value or "").split(",") if m.strip()]


def read_table(path) -> pd.DataFrame:
    """The table with a numeric `value` column; malformed files and non-numeric values -> ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: table not found")
    try:
        df = pd.read_csv(path, dtype={"model": str, "dataset": str, "metric": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path}: malformed CSV ({first}); it needs one header row {','.join(NEED)} and "
                          f"one row per model, dataset and metric") from None
    if not set(NEED) <= set(df.columns):
        raise ConfigError(f"{path}: needs columns {list(NEED)}, has {list(df.columns)}")
    values = pd.to_numeric(df.value, errors="coerce")
    bad = values.isna() & df.value.notna()
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise ConfigError(f"{path}:{i + 2}: value {df.value.iloc[i]!r} of {df.model.iloc[i]} × {df.dataset.iloc[i]}"
                          f" × {df.metric.iloc[i]} is not a number ({int(bad.sum())} such row(s)); fix or empty it")
    for col in ("model", "dataset", "metric"):
        if df[col].isna().any():
            i = int(df[col].isna().to_numpy().nonzero()[0][0])
            raise ConfigError(f"{path}:{i + 2}: empty {col}; every row needs a model, dataset and metric")
    if "seed" in df.columns:
        seeds = pd.to_numeric(df.seed, errors="coerce")
        if seeds.isna().any():
            i = int(seeds.isna().to_numpy().nonzero()[0][0])
            raise ConfigError(f"{path}:{i + 2}: seed {df.seed.iloc[i]!r} is not a number; the seed column holds "
                              f"integers (or drop the column for one seed)")
        df = df.assign(seed=seeds.astype(int))
    else:
        df = df.assign(seed=0)
    key = ["model", "dataset", "metric", "seed"]
    dup = df.duplicated(key)
    if dup.any():
        i = int(dup.to_numpy().nonzero()[0][0])
        raise ConfigError(f"{path}:{i + 2}: a second row for {df.model.iloc[i]} × {df.dataset.iloc[i]} × "
                          f"{df.metric.iloc[i]} at seed {df.seed.iloc[i]}; add a `seed` column to tell runs apart")
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
