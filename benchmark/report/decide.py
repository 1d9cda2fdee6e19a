"""`bench rank`'s decision, from a table of scores (one row per candidate model, one column per proxy): which
proxies can decide (not those constant over the pool or saturated at their best possible value), the winner and
the runner-up by the trusted proxy, whether they are distinguishable (a paired bootstrap over the test images of
an accuracy-type proxy), and how many of the usable proxies put the same model first. Pure functions; rank.py
gathers the inputs and prints `describe`'s lines.

Rows are labelled candidates, not necessarily models: (model, layer) pairs rank the same way.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

from ..select_core import order_models

CONSTANT_RTOL = 1e-6  # scores this close (relative) are one value: float noise such as hscore 2.0000000000000013
BOUND_RTOL = 1e-3  # within 0.1 % of the best possible value counts as at it (sfda 0.9995, top-1 99.95 %)
DEFAULT_TRUSTED = "linear"  # trusted without a track record: the linear probe is the usual reference for transfer


def flag(values: pd.Series, best: pd.Series | None = None) -> str:
    """Why a proxy's scores over the pool cannot decide ('' when they can): fewer than two candidates scored, one
    value for all, or two or more at the proxy's best possible value (`best`, per candidate, or None)."""
    v = values.dropna().astype(float)
    if len(v) < 2:
        return "no scores" if v.empty else f"scored for only {len(v)} of {len(values)} candidates"
    at = []
    if best is not None:
        b = best.reindex(v.index).astype(float)
        at = list(v.index[(v - b).abs() <= BOUND_RTOL * b.abs().clip(lower=1.0)])
    if v.max() - v.min() <= CONSTANT_RTOL * v.abs().max():
        return f"constant: {v.iloc[0]:.4g} for every candidate" + (
            " (its best possible value)" if len(at) == len(v) else "")
    if len(at) >= 2:
        return f"saturated: {len(at)} candidates at its best possible value {best[at[0]]:.4g}"
    return ""


def top_set(values: pd.Series, higher_is_better: bool) -> list:
    """The candidates at the best score, ties (to CONSTANT_RTOL) included."""
    v = values.dropna().astype(float)
    if v.empty:
        return []
    b = v.max() if higher_is_better else v.min()
    return sorted(v.index[(v - b).abs() <= CONSTANT_RTOL * max(abs(b), v.abs().max())])


def _interval(data: np.ndarray, n_boot: int, seed: int, level: float) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, in points (x100). Percentile, not BCa: BCa is undefined on
    constant data (two identical models: every paired difference is 0), which is exactly a case to report."""
    res = bootstrap((data,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile",
                    random_state=np.random.default_rng(seed), vectorized=True, batch=max(1, 2 ** 22 // len(data)))
    return 100.0 * float(res.confidence_interval.low), 100.0 * float(res.confidence_interval.high)


def accuracy_interval(correct: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Bootstrap interval (points) of top-1 accuracy over the test images, from per-image 0/1 correctness."""
    return _interval(np.asarray(correct, dtype=np.float64), n_boot, seed, level)


def paired_difference(correct_a, correct_b, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Top-1 of a minus top-1 of b in points, with the paired bootstrap interval: the same resampled test images
    for both models (resampling per-image differences), so what the two get right together cancels."""
    d = np.asarray(correct_a, dtype=np.float64) - np.asarray(correct_b, dtype=np.float64)
    lo, hi = _interval(d, n_boot, seed, level)
    return {"n_test": len(d), "diff": 100.0 * float(d.mean()), "lo": lo, "hi": hi, "level": level,
            "distinguishable": bool(lo > 0 or hi < 0)}


def choose_trusted(usable: list, track: pd.Series | None, order: list) -> tuple[str | None, str]:
    """(the proxy to trust, why). `track`: mean Kendall τ with the target on past records, best first (None: no
    --results). `order`: the proxies in the user's order, for the fallback."""
    if not usable:
        return None, "no usable proxy"
    if track is not None and len(track):
        known = [p for p in track.index if p in usable]
        if known:
            p, lead = known[0], track.index[0]
            why = f"best track record on the past records: mean Kendall τ {track[p]:.2f} with the target"
            if lead != p:
                why += f" ({lead} has a better one, {track[lead]:.2f}, but is not usable here)"
            return p, why
        fallback = DEFAULT_TRUSTED if DEFAULT_TRUSTED in usable else next(p for p in order if p in usable)
        return fallback, f"none of the usable proxies has a track record on the past records; {fallback} by default"
    if DEFAULT_TRUSTED in usable:
        return DEFAULT_TRUSTED, ("the default, as no --results DIR of past records was given to choose the proxy "
                                 "by its track record")
    p = next(p for p in order if p in usable)
    return p, f"the default {DEFAULT_TRUSTED} is not usable here; the first usable of --proxy"


def decide(scores: pd.DataFrame, higher: dict, flags: dict, trusted: str, correct: dict, n_boot: int = 1000,
           seed: int = 0, level: float = 0.95) -> dict:
    """The decision as a dict (written to rank.json; `describe` words it). `correct[proxy][candidate]`: per-image
    0/1 correctness for the accuracy-type proxies that have it."""
    usable = [p for p in scores.columns if not flags.get(p)]
    out = {"trusted": trusted, "usable": usable, "left_out": {p: f for p, f in flags.items() if f}}
    order = order_models(scores[trusted].rename_axis("candidate"), higher[trusted])
    out.update(winner=order[0], runner_up=order[1] if len(order) > 1 else None,
               scores={c: float(scores.at[c, trusted]) for c in order[:2]})
    out["tied"] = out["runner_up"] in top_set(scores[trusted], higher[trusted])
    firsts = {p: top_set(scores[p], higher[p]) for p in usable}
    out["agreement"] = {"firsts": firsts, "agree": [p for p, s in firsts.items() if out["winner"] in s],
                        "n_usable": len(usable)}
    # The interval: on the trusted proxy's test images if it is accuracy-type, else on the first usable one that is.
    ip = trusted if trusted in correct else next((p for p in usable if p in correct), None)
    have = correct.get(ip, {})
    w, r = out["winner"], out["runner_up"]
    if ip is not None and r is not None and w in have and r in have:
        out["interval"] = {"proxy": ip, **paired_difference(have[w], have[r], n_boot, seed, level)}
        out["distinguishable"] = out["interval"]["distinguishable"]
        out["not_distinguishable_from_winner"] = [
            c for c in order[1:] if c in have and not paired_difference(have[w], have[c], n_boot, seed,
                                                                         level)["distinguishable"]]
    else:
        out["interval"] = None
        out["distinguishable"] = False if out["tied"] else None  # a tie on the trusted proxy is its own answer
    return out


def describe(d: dict, key: str, why: str) -> list:
    """The decision in words, first line the recommendation. `key`: the trusted column's label."""
    w, r, iv = d["winner"], d["runner_up"], d["interval"]
    if r is None:
        return [f"Recommendation: {w} (the only candidate scored by {key})."]
    verdict = {True: "distinguishable from", False: "NOT distinguishable from", None: "no interval to tell it from"}
    head = f"Recommendation: {w}, {verdict[d['distinguishable']]} the runner-up {r}."
    if iv is not None and iv["hi"] < 0:  # the trusted proxy is not the interval's: its test images disagree
        head = f"Recommendation: {w} by {key}, but {iv['proxy']}'s test images favour the runner-up {r}."
    lines = [head,
             f"  trusted proxy: {key} ({why})",
             f"  {key}: {w} {d['scores'][w]:.4g}, {r} {d['scores'][r]:.4g}" + (" (tied; first by name)" if d["tied"] else "")]
    if iv is not None:
        pct = f"{100 * iv['level']:.0f}%"
        lines.append(f"  paired bootstrap of {iv['proxy']} top-1 over {iv['n_test']} test images: {w} − {r} = "
                     f"{iv['diff']:+.2f} points, {pct} CI [{iv['lo']:+.2f}, {iv['hi']:+.2f}]"
                     + (" (excludes 0)" if iv["distinguishable"] else " (includes 0)"))
        close = [c for c in d["not_distinguishable_from_winner"] if c != r]
        if close:
            lines.append(f"  also not distinguishable from {w} on {iv['proxy']}: {', '.join(close)}")
    else:
        lines.append(f"  no per-image interval: {key} is not accuracy-type and no usable linear/knn proxy was run")
    a = d["agreement"]
    others = {}  # first choice (ties joined by '/') -> the proxies that make it
    for p, s in a["firsts"].items():
        if w not in s:
            others.setdefault("/".join(s), []).append(p)
    shared = sorted({c for p in a["agree"] for c in a["firsts"][p] if c != w})  # tied first with the winner
    n_shared = sum(len(a["firsts"][p]) > 1 for p in a["agree"])
    lines.append(f"  agreement: {len(a['agree'])} of {a['n_usable']} usable proxies put {w} first"
                 + (f" ({', '.join(a['agree'])})" if a["agree"] else "")
                 + (f", {n_shared} of them tied with {'/'.join(shared)}" if shared else "")
                 + "".join(f"; {', '.join(ps)} put {c} first" for c, ps in others.items()))
    for p, f in d["left_out"].items():
        lines.append(f"  left out: {p} — {f}")
    return lines
