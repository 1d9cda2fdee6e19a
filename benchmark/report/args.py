"""Arguments of `bench report` and `bench rank`. Kept apart from the commands so that building the CLI parser
imports neither pandas, scipy nor torch (`bench --help` in a fraction of a second)."""
from __future__ import annotations

import argparse


def _bootstrap(s: str) -> int:
    """--bootstrap: resamples for the intervals, >= 1, or 0 for none."""
    try:
        n = int(s)
        assert n >= 0
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError(f"wants a number of resamples >= 1 (e.g. 1000), or 0 for no intervals, "
                                         f"got '{s}'") from None
    return n


def add_report_args(ap):
    ap.add_argument("--results", default="results", help="records directory written by bench run")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--target", default="finetune", help="protocol (or table metric) whose accuracy is predicted")
    ap.add_argument("--proxies", help="comma-separated proxies (default: every other protocol)")
    ap.add_argument("--transform", choices=["none", "logit"], default="none",
                    help="logit(v/100) on percentage scores before Pearson (Kornblith et al. 2019)")
    ap.add_argument("--bootstrap", type=_bootstrap, default=1000,
                    help="bootstrap resamples for the 95%% intervals (default 1000); 0 turns the intervals off "
                         "(their columns are then empty)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument("--table", help="a published long table (model, dataset, metric, value) instead of records")
    ap.add_argument("--proxy", help="with --table: comma-separated metrics to correlate with --target")
    ap.add_argument("--lower-is-better", default="", help="with --table: metrics where lower is better")
    ap.add_argument("--percent", default="",
                    help="with --table: metrics in %% (0-100) that --transform logit transforms, on top of names "
                         "ending in acc or top1")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--cross", action="store_true",
                    help="correlate each proxy on dataset A with the target on dataset B (cross_correlations.csv)")
    ap.add_argument("--zoo", default=None,
                    help="zoo YAML whose models' `meta:` numbers (imagenet_top1, ...) join --cross as proxies")


# The cheap frozen proxies, then the analytic estimators (train features only; leep/nce need a source classifier).
# nleep is left out: its Gaussian mixture (5 components per class, full covariances) costs hours at 50k samples.
DEFAULT_RANK_PROXIES = "linear,knn,logme,hscore,reg_hscore,transrate,leep,nce,sfda,parc,gbc,ncti,etran"


def _positive_int(s: str) -> int:
    import argparse
    try:
        v = int(s)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"wants a positive integer, got '{s}'")
    return v


def _layers_arg(s: str):
    """'all', or a list of block indices and layer names, as a datasets.yaml `layers:` value."""
    import argparse
    if s.strip() == "all":
        return "all"
    items = [t.strip() for t in s.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"wants 'all' or comma-separated block indices/layer names, got '{s}'")
    out = [int(t) if t.lstrip("-").isdigit() else t for t in items]
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"names a layer twice: '{s}'")
    return out


def add_rank_args(ap):
    ap.add_argument("--zoo", default="model_zoo.yaml")
    ap.add_argument("--dataset", required=True, help="a datasets.yaml entry name, or an ImageFolder path")
    ap.add_argument("--datasets", default=None, help="datasets YAML holding the entry (and its settings)")
    ap.add_argument("--proxy", default=DEFAULT_RANK_PROXIES,
                    help="comma-separated proxies to compute (default: %(default)s)")
    ap.add_argument("--resolution", type=int, default=None, help="input resolution for a folder dataset")
    ap.add_argument("--layers", type=_layers_arg, default=None,
                    help="rank (model, layer) pairs: 'all', or comma-separated block indices (negative from the end) "
                         "and layer names ('last': the penultimate features); default: the dataset's layers "
                         "setting ('last': models only)")
    ap.add_argument("--out", default="bench_rank",
                    help="where this ranking goes: its records, rank.csv and rank.json in OUT/<dataset>/, the "
                         "feature cache in OUT/.cache (default: ./bench_rank)")
    ap.add_argument("--cache-dir", default=None,
                    help="feature cache (default: OUT/.cache); a bench run's cache (its OUT/.cache) reuses its "
                         "features")
    ap.add_argument("--results", default=None,
                    help="past records (a bench run's --out with the target on other datasets), read only: the "
                         "proxy with the best track record there is trusted (default: linear, and it says so)")
    ap.add_argument("--target", default=None,
                    help="with --results: the protocol the track record is measured against (default: the "
                         "datasets' settings.target, finetune)")
    ap.add_argument("--bootstrap", type=_positive_int, default=1000,
                    help="bootstrap resamples of the test images for the 95%% intervals (seed 0)")
    ap.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
