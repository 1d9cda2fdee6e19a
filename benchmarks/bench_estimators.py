"""The twelve transferability estimators against the authors' code, side by side, in one run.

    python benchmarks/bench_estimators.py --refs /tmp/estref [--n 50000 --dim 2048 --classes 100] [--threads 2]
    python benchmarks/bench_estimators.py --refs /tmp/estref --features <cache>/features/<hash>.pt  # real ones

--refs: a folder holding the reference repositories, never committed (clone them there, at the commits
../shared/reference/estimators/README.md names): TencentARC+SFDA, BUserName+NCTI, mgholamikn+ETran,
thuml+LogME, Long-Kai+TransRate, yaojie_README.md (the H-score README of
YaojieBao/An-Information-theoretic-Metric-of-Transferability) and tllib/ (tllib/ranking/{hscore,transrate}.py of
thuml/Transfer-Learning-Library), google_gbc/ (gbc.py and features_targets_utils.py of google-research's
transferability_metrics, run by benchmarks/gbc_tf_reference.py under --tf-python, a Python with TensorFlow).
Row `ncti/exact`: NCTI's code with sklearn's exact PCA, whose value ours equals (as published it is randomized).
Features: planted classes (class means + isotropic noise + a shared low-rank nuisance), float32 as the feature
cache stores them; source probabilities from a fixed random 1000-way linear classifier. The total of our twelve
is compared with one default 45-value `linear` sweep on the same train features (val/test drawn alike).
Each estimator is timed alone (cold: nothing shared), then all of them in one pass as `bench run` computes a
group's proxies, sharing the centred Gram matrix; that pass is what is compared with the sweep.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import pickle
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmark.proxies import get_proxy, moments

ESTIMATORS = ["logme", "hscore", "reg_hscore", "transrate", "leep", "nce", "nleep", "sfda", "parc", "gbc",
              "ncti", "etran"]


def planted(n, d, k, seed, rank=16):
    """Samples of one fixed set of planted classes (the means depend on (d, k) only; `seed` draws samples)."""
    means = 1.5 * torch.randn(k, d, generator=torch.Generator().manual_seed(1234)) / d ** 0.25
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    nuisance = torch.randn(n, rank, generator=g) @ torch.randn(rank, d, generator=g) / rank ** 0.5
    x = means[y] + torch.randn(n, d, generator=g) + nuisance + 0.5
    return x.float(), y


def load(path: Path, name: str, extra_path: Path | None = None):
    """Import one reference file under a unique module name (several repos ship a `metrics.py`/`utils.py`)."""
    sys.path.insert(0, str(extra_path or path.parent))
    for stale in ("utils", "metrics", "models"):
        sys.modules.pop(stale, None)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    with contextlib.redirect_stdout(io.StringIO()):
        spec.loader.exec_module(mod)
    sys.path.pop(0)
    return mod


def references(refs: Path) -> dict:
    """name -> fn(x64 numpy, y numpy, probs numpy, x torch, y torch) running the reference code as published."""
    import scipy
    import scipy.stats  # noqa: F401
    import sklearn
    import sklearn.decomposition  # noqa: F401
    import sklearn.preprocessing  # noqa: F401
    sfda = load(refs / "TencentARC+SFDA" / "metrics.py", "ref_sfda")
    sfda.sklearn, sfda.scipy = sklearn, scipy  # PARC_Score uses these names without importing them
    ncti = load(refs / "BUserName+NCTI" / "metrics.py", "ref_ncti")
    # Equal value: the same code with sklearn's exact PCA (its PCA(64) is randomized and unseeded above 500 rows)
    ncti_exact = load(refs / "BUserName+NCTI" / "metrics.py", "ref_ncti_exact")
    ncti_exact.PCA = functools.partial(sklearn.decomposition.PCA, svd_solver="full")
    etran = load(refs / "mgholamikn+ETran" / "metrics.py", "ref_etran")
    leep = load(refs / "thuml+LogME" / "LEEP.py", "ref_leep")
    nce = load(refs / "thuml+LogME" / "NCE.py", "ref_nce")
    tr = load(refs / "Long-Kai+TransRate" / "generate_transrate" / "transrate.py", "ref_transrate")
    tr_logs = load(refs / "Long-Kai+TransRate" / "extract_result_utils.py", "ref_transrate_logs")
    tllib = load(refs / "tllib" / "hscore.py", "ref_tllib_hscore")
    readme = (refs / "yaojie_README.md").read_text()
    hscore_ns: dict = {"np": np}
    exec(re.search(r"## H-score Computation.*?```bash\n(.*?)```", readme, re.S).group(1), hscore_ns)

    def transrate_official(x, y):
        z = x - x.mean(0, keepdims=True)  # experiment_builder_get_eigens.py, then transrate_eig's statistics
        eig_z, rank_z, eig_zc, rank_zc, n_zc = tr.pre_transrate(z, np.copy(y))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "Z_centralized.pkl"
            path.write_bytes(pickle.dumps({"eig_Z": eig_z, "rank_Z": rank_z, "eig_Zc": eig_zc,
                                           "rank_Zc": rank_zc, "n_Zc": n_zc}))
            rz, rzc = tr_logs.process_transrate_logs(str(path), eps=1e-4, normalize_eigz=True)
        return rz - rzc

    def quiet(fn):
        def run(*a):
            with contextlib.redirect_stdout(io.StringIO()):
                return fn(*a)
        return run

    def nleep(x, y):
        np.random.seed(0)  # the reference's GaussianMixture draws from NumPy's global RNG
        return sfda.NLEEP(x, y)

    return {
        "logme": lambda x, y, p: sfda.LogME_Score(x, y),
        "hscore": lambda x, y, p: hscore_ns["getHscore"](x, y),
        "reg_hscore": lambda x, y, p: tllib.regularized_h_score(x, y),
        "transrate": lambda x, y, p: transrate_official(x, y),
        "leep": lambda x, y, p: leep.LEEP(p, y),
        "nce": lambda x, y, p: nce.NCE(np.argmax(p, 1), y),
        "nleep": lambda x, y, p: nleep(x, y),
        "sfda": lambda x, y, p: quiet(sfda.SFDA_Score)(x.copy(), y),
        "parc": lambda x, y, p: sfda.PARC_Score(x, y),
        "ncti": lambda x, y, p: dict(zip(("seli", "ncc", "vc"), quiet(ncti.NCTI_Score)(x, y))),
        "ncti/exact": lambda x, y, p: dict(zip(("seli", "ncc", "vc"), quiet(ncti_exact.NCTI_Score)(x, y))),
        "etran": lambda x, y, p: {"energy": float(etran.Energy_Score(x, 0.5, "bot")), "lda": etran.LDA_Score(x, y)},
    }


def gbc_reference(python: Path, ref: Path, repeat: int):
    """fn(x, y, p) running the TensorFlow reference in `python`; returns its value, and stores its own timing
    (TF import and warm-up excluded) for `timed` to report."""
    import json
    import subprocess

    def run(x, y, p):
        with tempfile.TemporaryDirectory() as tmp:
            np.savez(Path(tmp) / "f.npz", x=x, y=y)
            runs = [json.loads(subprocess.run([str(python), str(Path(__file__).with_name("gbc_tf_reference.py")),
                                               str(ref), str(Path(tmp) / "f.npz")], check=True, text=True,
                                              capture_output=True).stdout.strip().splitlines()[-1])
                    for _ in range(1 if repeat < 2 else repeat)]
        best = min(runs, key=lambda r: r["seconds"])
        return SelfTimed(best["seconds"], best["value"])
    return run


class SelfTimed(float):
    """A reference value that carries its own timing (measured inside a subprocess)."""
    def __new__(cls, seconds, value):
        obj = super().__new__(cls, value)
        obj.seconds = seconds
        return obj


def timed(fn, repeat=1, before=lambda: None):
    """Best of `repeat` wall times (a run over 10 s is not repeated; one under 50 ms is, until 1 s of runs or 50
    runs: millisecond timings need it), `before()` untimed ahead of each run."""
    best, out, spent, runs = float("inf"), None, 0.0, 0
    while runs < repeat or (repeat > 1 and best < 0.05 and spent < 1.0 and runs < 50):
        before()
        t0 = time.perf_counter()
        out = fn()  # every proxy ends in .item(): its device work is done when it returns
        took = time.perf_counter() - t0
        best, spent, runs = min(best, took), spent + took, runs + 1
        if best > 10:
            break
    return best, out


def real_features(path: Path):
    """A feature file of bench's cache (<cache>/features/<hash>.pt: features, labels, source_probs)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    probs = blob.get("source_probs")
    if probs is None:
        g = torch.Generator().manual_seed(1)
        d = blob["features"].shape[1]
        probs = torch.softmax(blob["features"].float() @ (torch.randn(d, 1000, generator=g) / d ** 0.5), dim=1)
    return blob["features"], blob["labels"], probs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--refs", type=Path, default=Path("/tmp/estref"))
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=",".join(ESTIMATORS), help="comma-separated estimators")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--no-linear", action="store_true")
    ap.add_argument("--tf-python", type=Path, help="a Python with TensorFlow: runs GBC's reference through "
                                                   "benchmarks/gbc_tf_reference.py on <refs>/google_gbc")
    ap.add_argument("--skip-reference", default="", help="comma-separated estimators whose reference is not run "
                                                         "(e.g. parc at N = 50,000: its N x N matrices)")
    ap.add_argument("--device", default="cpu", help="where ours run (cuda: against the references on all CPU "
                                                    "cores); the features are moved there before timing")
    ap.add_argument("--repeat", type=int, default=3, help="best of R runs per side (runs over 10 s: one)")
    ap.add_argument("--features", type=Path, help="a cached feature file of bench (real features) instead of "
                                                  "planted ones; its source_probs when stored")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.features:
        x, y, probs = real_features(args.features)
        args.n, args.dim, args.classes = len(y), x.shape[1], int(torch.unique(y).numel())
    else:
        x, y = planted(args.n, args.dim, args.classes, seed=0)
        g = torch.Generator().manual_seed(1)
        probs = torch.softmax(x @ (torch.randn(args.dim, 1000, generator=g) / args.dim ** 0.5), dim=1)
    xn, yn, pn = x.double().numpy(), y.numpy(), probs.double().numpy()
    x, y, probs = x.to(args.device), y.to(args.device), probs.to(args.device)  # ours read them where they run
    refs = {} if args.no_reference else references(args.refs)
    if args.tf_python and not args.no_reference:
        refs["gbc"] = gbc_reference(args.tf_python, args.refs / "google_gbc", args.repeat)
    for name in filter(None, args.skip_reference.split(",")):
        for r in [r for r in refs if r == name or r.startswith(name + "/")]:
            refs.pop(r)
    print(f"N={args.n} D={args.dim} K={args.classes}, ours on {args.device}, torch threads {args.threads}, "
          f"best of {args.repeat}; "
          f"ours alone: shared-statistics memo cleared before each run")
    print("| estimator | ours (s) | reference (s) | ratio | ours | reference | rel. diff |")
    print("|---|---|---|---|---|---|---|")
    total = 0.0
    for name in args.only.split(","):
        proxy = get_proxy(name)
        kw = {"source_probs": probs} if proxy.needs_source_probs else {}
        if name == "nleep":
            kw = {"log": False}  # the reference (SFDA's NLEEP) omits the log: compare equal values
        t_ours, ours = timed(lambda: proxy(x, y, **kw), args.repeat, moments.clear)
        total += t_ours
        ours = ours if proxy.combine else ours[proxy.primary]
        if name not in refs:
            why = ("not run" if args.no_reference or name in args.skip_reference.split(",")
                   else "n/a (TensorFlow reference not installed)")
            shown = ", ".join(f"{k}={v:.6g}" for k, v in ours.items()) if isinstance(ours, dict) else f"{ours:.6g}"
            print(f"| {name} | {t_ours:.3g} | {why} | | {shown} | | |", flush=True)
            continue
        for ref_name in [name] + [r for r in refs if r.startswith(name + "/")]:  # as published, then variants
            t_ref, ref = timed(lambda: refs[ref_name](xn, yn, pn), 1 if name == "gbc" else args.repeat)
            t_ref = getattr(ref, "seconds", t_ref)  # the TF reference's own timing (gbc repeats inside)
            if isinstance(ref, dict):
                diff = max(abs(ours[k] - ref[k]) / max(abs(ref[k]), 1e-300) for k in ref)
                ours_s = ", ".join(f"{k}={v:.6g}" for k, v in ours.items())
                ref_s = ", ".join(f"{k}={float(v):.6g}" for k, v in ref.items())
            else:
                diff, ours_s, ref_s = abs(ours - ref) / max(abs(ref), 1e-300), f"{ours:.6g}", f"{float(ref):.6g}"
            print(f"| {ref_name} | {t_ours:.3g} | {t_ref:.3g} | {t_ref / t_ours:.1f}× | {ours_s} | {ref_s} | "
                  f"{diff:.1e} |", flush=True)
    print(f"total of ours, each alone: {total:.1f} s")
    # As a run computes them: one group's proxies in sequence on one train tensor, sharing the centred Gram
    # matrix and its eigendecomposition (benchmark/proxies/moments.py).
    moments.clear()
    together = {}
    t_all = time.perf_counter()
    for name in args.only.split(","):
        proxy = get_proxy(name)
        kw = {"source_probs": probs} if proxy.needs_source_probs else {}
        together[name], _ = timed(lambda: proxy(x, y, **kw))
    t_all = time.perf_counter() - t_all
    print(f"together, in one pass as a run computes them: {t_all:.1f} s ("
          + ", ".join(f"{k} {v:.2f}" for k, v in together.items()) + ")")
    total = t_all
    if not args.no_linear:
        if args.features:  # val/test: a seeded fifth of the same rows (the sweep's work is its train fits)
            held = torch.randperm(args.n, generator=torch.Generator().manual_seed(2))[:max(args.n // 5, 1)]
            vx, vy, tx, ty = x[held], y[held], x[held], y[held]
        else:
            vx, vy = planted(max(args.n // 5, 2 * args.classes), args.dim, args.classes, seed=2)
            tx, ty = planted(max(args.n // 5, 2 * args.classes), args.dim, args.classes, seed=3)
        vx, vy, tx, ty = (t.to(args.device) for t in (vx, vy, tx, ty))
        t_lin, out = timed(lambda: get_proxy("linear")(x, y, tx, ty, val_x=vx, val_y=vy))
        print(f"one default `linear` sweep (45 wd values + refit): {t_lin:.1f} s (test {out['top1']:.2f} %); "
              f"all estimators / linear = {total / t_lin:.2f}")


if __name__ == "__main__":
    main()
