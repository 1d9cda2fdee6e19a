"""The linear probe's sweep against sklearn at equal objective, and against today's code (2864ef7), in one run.

    python benchmarks/bench_linear.py                       # real features (extracted once, cached) + planted
    python benchmarks/bench_linear.py --cases real5 real10  # a subset of the cases
    python benchmarks/bench_linear.py --device cuda --cases imagenet --subset 3   # 1.28M x 2048 x 1000 planted:
                                                            # 3 wd spanning the sweep, times extrapolated x 15
    python benchmarks/bench_linear.py --cases planted --subset 5   # 50,000 x 2,048 x 100 on 2 cores, extrapolated

Cases: real5 = 1,500 x 1,280 x 5 and real10 = 3,000 x 1,280 x 10 (EfficientNet-Lite0, packaged ImageNet weights,
on MNIST-5k at 64 px through the runner's feature path; real5 = digits 0-4), planted = 50,000 x 2,048 x 100
(Gaussian classes), imagenet = 1,280,000 x 2,048 x 1,000 planted (device only, ours only).

Per case, on the same problem (the probe's standardisation of train, applied to val/test): ours takes the float32
features as the proxy does (standardised inside the solver, in float64), sklearn and every objective the float64
standardised copy, the very problem the solver poses.
- "equal objective": our 45-value sweep (timed) and sklearn LogisticRegression(lbfgs, warm_start=True) over the
  same wds. sklearn's time is that of the loosest tol of the ladder 1e-4 ... 1e-10 (each tol run once over the
  whole sweep, loosest first, stopping at the first) whose every point is within the gap ours states (1e-6) of the
  reference optimum per wd: the lowest objective of ours pushed to tol 1e-10 (untimed) and every sklearn solution
  the ladder computed (one float64 formula for all). --sklearn-budget (default 1 h per case) bounds the ladder: when
  it is spent, sklearn's time so far is reported as a lower bound (≥). Reported: times, worst gaps, val-chosen
  wd/accuracy of each. --ladder-from T starts the ladder at tol T, for a size where a shorter run (--subset)
  showed every looser tol missing the gap (said in the output).
  --subset S solves every k-th wd only (S values spanning the range, warm-started along that coarser path, the
  same on both sides) and extrapolates the times x 45/S: said in the table.
- "proxy": the whole `linear` proxy (sweep + refit on train+val + test), today's code vs ours, timed in one run.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]  # this checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmark.proxies.linear import Problem, default_wds, linear, predict, standardisation  # noqa: E402
from old_linear import OLD_COMMIT, load_old_linear  # noqa: E402

GAP = 1e-6  # the probe's stated tolerance (its default `tol`)
LADDER = [1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]


def objective(W, b, x, y, wd):
    """Σ_i CE_i + wd/2 ‖W‖² in float64 over row chunks of x (on x's device): the same formula for every solution
    (W [K, D], b [K], any array type)."""
    W, b = (torch.as_tensor(t, dtype=torch.float64, device=x.device) for t in (W, b))
    total = 0.5 * wd * float((W * W).sum())
    for i in range(0, len(x), 8192):
        z = torch.addmm(b, x[i:i + 8192].double(), W.T)
        total += float((torch.logsumexp(z, 1) - z.gather(1, y[i:i + 8192, None])[:, 0]).sum())
    return total


def accuracy(W, b, x, y):
    W, b = (torch.as_tensor(t, dtype=torch.float64, device=x.device) for t in (W, b))
    return 100.0 * float((predict((W, b), x, torch.float64) == y).double().mean())


def real_features(cache: Path):
    """MNIST-5k at 64 px through efficientnet_lite0 on the runner's feature path (cached under `cache`)."""
    from benchmark.config import DatasetEntry, DatasetsConfig, ModelEntry, Settings
    from benchmark.features import FeatureCache
    from benchmark.runner import GroupContext, RunOptions, RunSummary
    entry = DatasetEntry(name="mnist5k", packaged="mnist5k", resolution=64)
    dsets = DatasetsConfig("benchmark", [entry], Settings(batch_size=128), {})
    ctx = GroupContext(ModelEntry(name="lite0", package="efficientnet_lite0"), entry, dsets,
                       RunOptions(out=str(cache / "out")), FeatureCache(cache), RunSummary(), {})
    return {s: ctx.features(s) for s in ("train", "val", "test")}


def planted(n, d, k, seed, device, means=None):
    """Gaussian classes: x = μ_y + ε, channel scales decaying as 1/√(j+1) (a spectrum, as real features have);
    class means at 0.3 of the noise in each channel. Over 2,048 channels that separates 100 classes completely
    (measured: val and test top-1 100 % at 50,000 x 2,048 x 100), so the weak end of the sweep is the separable
    regime, where the optimum's norm grows as wd -> 0."""
    g = torch.Generator(device=device).manual_seed(seed)
    scale = (torch.arange(d, device=device) + 1.0).rsqrt()
    if means is None:
        means = 0.3 * torch.randn(k, d, generator=torch.Generator(device=device).manual_seed(1234), device=device)
    y = torch.randint(0, k, (n,), generator=g, device=device)
    x = torch.empty(n, d, device=device)
    for i in range(0, n, 65536):
        yc = y[i:i + 65536]
        x[i:i + len(yc)] = (means[yc] + torch.randn(len(yc), d, generator=g, device=device)) * scale
    return x, y, means


def make_case(name, args):
    if name in ("real5", "real10"):
        f = real_features(Path(args.cache))
        k = 5 if name == "real5" else 10
        sel = [(x[y < k], y[y < k]) for x, y in (f["train"], f["val"], f["test"])]
        desc = f"EfficientNet-Lite0 on MNIST-5k at 64 px, digits 0-{k - 1}"
        return sel, k, desc
    n, d, k = {"planted": (50_000, 2_048, 100), "imagenet": (1_280_000, 2_048, 1_000), "tiny": (2_000, 64, 5)}[name]
    tr = planted(n, d, k, 0, args.device)
    va = planted(n // 5, d, k, 1, args.device, tr[2])
    te = planted(n // 5, d, k, 2, args.device, tr[2])
    return [tr[:2], va[:2], te[:2]], k, f"planted Gaussian classes, {n:,} x {d:,} x {k:,}"


def sweep_wds(subset):
    wds = sorted(default_wds(45), reverse=True)
    if subset >= 45:
        return wds
    step = (len(wds) - 1) // (subset - 1)
    return wds[::step][:subset]


def ours_sweep(x, y, k, wds, tol, mean, std):
    """The proxy's own path: the cached float32 features as they are, standardised inside the solver."""
    t0 = time.perf_counter()
    prob = Problem(x, y, k, shift=mean, scale=std)
    sols = [(p, ok) for _, p, ok in prob.sweep(wds, tol=tol)]
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, prob, sols


def sklearn_sweep(x64, y, wds, tol, deadline=float("inf")):
    """sklearn over the sweep, warm-started along it; stops after the wd during which `deadline` (perf_counter)
    passed (a single fit cannot be interrupted) and returns the solutions it has (fewer than wds then)."""
    from sklearn.linear_model import LogisticRegression
    clf = LogisticRegression(warm_start=True, max_iter=100_000, tol=tol)
    out, t0 = [], time.perf_counter()
    for wd in wds:
        clf.set_params(C=1.0 / wd).fit(x64, y)
        out.append((clf.coef_.copy(), clf.intercept_.copy()))
        if time.perf_counter() > deadline:
            break
    return time.perf_counter() - t0, out


def chosen(accs, wds):
    i = int(np.argmax(accs))  # the first maximum: the strongest wd among ties (as the proxy chooses)
    return wds[i], accs[i], i


def equal_objective(case, data, k, args, rows):
    (tx, ty), (vx, vy), (ex, ey) = data
    tx = tx.float()
    mean, std = standardisation(tx)
    # sklearn and every objective read the float64 standardisation, the very problem the solver poses itself
    x, v, e = ((t.double() - mean.double()) / std.double() for t in (tx, vx, ex))
    wds = sweep_wds(args.subset)
    scale = 45 / len(wds)
    t_ours, prob, sols = ours_sweep(tx, ty, k, wds, GAP, mean, std)
    unconv = sum(not ok for _, ok in sols)
    ours = [prob.unrotate(p, torch.float64) for p, _ in sols]
    # Our side of the reference: each solution pushed to tol 1e-10 (untimed).
    ref = [objective(*prob.unrotate(prob.fit(wd, p, tol=1e-10)[0], torch.float64), x, ty, wd)
           for wd, (p, _) in zip(wds, sols)]
    f_ours = [objective(W, b, x, ty, wd) for (W, b), wd in zip(ours, wds)]
    line = dict(case=case, n=f"{len(ty):,} x {x.shape[1]:,} x {k}", wds=len(wds), t_ours=t_ours * scale,
                evals=prob.evals, unconv=unconv)
    if args.device == "cpu" and not args.skip_sklearn:
        # The ladder, loosest tol first, each tol once over the sweep; it stops at the first tol whose every point
        # is within GAP of the reference, or when the sklearn budget is spent (its time is then a lower bound).
        # Reference optimum per wd: the lowest objective of ours pushed to 1e-10 and every sklearn solution the
        # ladder computed (its tightest tol included), so both sides are judged against the same numbers.
        x64, y = x.numpy(), ty.numpy()
        deadline = time.perf_counter() + args.sklearn_budget
        runs = []
        for tol in [t for t in LADDER if t <= args.ladder_from]:
            t_sk, sk = sklearn_sweep(x64, y, wds, tol, deadline)
            f_sk = [objective(W, b, x, ty, wd) for (W, b), wd in zip(sk, wds)]
            ref = [min(r, f) for r, f in zip(ref, f_sk)] + ref[len(f_sk):]
            runs.append((tol, t_sk, sk, f_sk))
            done = len(sk) == len(wds)
            gaps = [(f - r) / r for f, r in zip(f_sk, ref)]
            print(f"  [{case}] sklearn tol {tol:g}: {t_sk * scale:.1f} s{'' if done else f' (stopped by the budget after {len(sk)} of {len(wds)} wd)'}, "
                  f"worst gap {max(gaps):.1e}", flush=True)
            if not done or max(gaps) <= GAP:
                break
        tol, t_sk, sk, f_sk = runs[-1]
        gaps = [(f - r) / r for f, r in zip(f_sk, ref)]  # against the final reference
        done = len(sk) == len(wds)
        line.update(t_sk=t_sk * scale, sk_tol=tol, sk_gap=max(gaps), sk_ok=done and max(gaps) <= GAP,
                    sk_done=done, sk_budget=not done or (max(gaps) > GAP and tol != LADDER[-1]))
        if done:
            sk_acc = [accuracy(W, b, v, vy) for W, b in sk]
            wd_s, acc_s, i_s = chosen(sk_acc, wds)
            line.update(sk_wd=wd_s, sk_val=acc_s, sk_test=accuracy(*sk[i_s], e, ey))
    ours_gap = [(f - r) / r for f, r in zip(f_ours, ref)]
    acc = [accuracy(W, b, v, vy) for W, b in ours]
    wd_o, acc_o, i_o = chosen(acc, wds)
    line.update(ours_gap=max(ours_gap), ours_wd=wd_o, ours_val=acc_o, ours_test=accuracy(*ours[i_o], e, ey))
    rows.append(line)
    print(f"  [{case}] {line}", flush=True)


def proxy_vs_old(case, data, args, rows):
    (tx, ty), (vx, vy), (ex, ey) = data
    old = load_old_linear()
    out = {}
    for name, fn in (("old", old.linear), ("ours", linear)):
        t0 = time.perf_counter()
        r = fn(tx, ty, ex, ey, val_x=vx, val_y=vy)
        out[name] = (time.perf_counter() - t0, r)
    (t_old, a), (t_new, b) = out["old"], out["ours"]
    rows.append(dict(case=case, t_old=t_old, t_new=t_new, old_wd=a["wd"], new_wd=b["wd"], old_top1=a["top1"],
                     new_top1=b["top1"], old_val=a["val_top1"], new_val=b["val_top1"],
                     unconv=(a["unconverged_fits"], b["unconverged_fits"])))
    print(f"  [{case}] proxy: {rows[-1]}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["real5", "real10", "planted"],
                    choices=["real5", "real10", "planted", "imagenet", "tiny"], help="tiny: a seconds-long smoke check")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/bench/bench_linear"),
                    help="feature cache for the real cases")
    ap.add_argument("--subset", type=int, default=45, help="solve S wd values spanning the sweep, times x 45/S")
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--sklearn-budget", type=float, default=3600.0,
                    help="seconds for sklearn's whole ladder per case; past it, its time is reported as a lower bound")
    ap.add_argument("--skip-old", action="store_true", help="no proxy timing against today's code")
    ap.add_argument("--ladder-from", type=float, default=LADDER[0],
                    help="start sklearn's ladder at this tol (when looser ones are known to miss the gap: said in "
                         "the output)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    print(f"# bench_linear: {platform.node()}, torch {torch.__version__}, {args.threads} threads, device "
          f"{args.device}, load {load:.1f} at start; subset {args.subset} of 45 wd", flush=True)
    eq, px = [], []
    for case in args.cases:
        data, k, desc = make_case(case, args)
        print(f"case {case}: {desc}", flush=True)
        equal_objective(case, data, k, args, eq)
        if case.startswith("real") and not args.skip_old:
            proxy_vs_old(case, data, args, px)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f} (start {load:.1f})\n")
    ext = " (extrapolated x 45/%d from %d wd)" % (args.subset, args.subset) if args.subset < 45 else ""
    lad = f"; sklearn's ladder from tol {args.ladder_from:g}" if args.ladder_from != LADDER[0] else ""
    print(f"## Equal objective, gap <= {GAP:g} of the reference optimum at every wd{ext}{lad}\n")
    print("| case | N x D x K | ours (s) | passes | ours worst gap | sklearn (s) | sklearn tol | sklearn worst gap "
          "| ratio | val-chosen wd / val % / test %: ours | sklearn |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in eq:
        if "t_sk" in r:
            bound = "≥ " if not r["sk_ok"] else ""
            miss = "" if r["sk_ok"] else (" (budget spent mid-sweep)" if not r["sk_done"] else " (MISSED)")
            sk = (f"{bound}{r['t_sk']:.1f} | {r['sk_tol']:g} | {r['sk_gap']:.1e}{miss} | "
                  f"**{bound}{r['t_sk'] / r['t_ours']:.1f}x**")
        else:
            sk = "not run | | | "
        sk_c = (f"{r['sk_wd']:.3g} / {r['sk_val']:.2f} / {r['sk_test']:.2f}" if "sk_wd" in r else "")
        print(f"| {r['case']} | {r['n']} | {r['t_ours']:.1f} | {r['evals']} | {r['ours_gap']:.1e}"
              f"{'' if r['ours_gap'] <= GAP and not r['unconv'] else ' (MISSED)'} | {sk} | "
              f"{r['ours_wd']:.3g} / {r['ours_val']:.2f} / {r['ours_test']:.2f} | {sk_c} |")
    if px:
        print(f"\n## The whole `linear` proxy (45-wd sweep + refit + test): today's code ({OLD_COMMIT}) vs ours\n")
        print("| case | today (s) | ours (s) | speed-up | wd: today / ours | test %: today / ours | "
              "val %: today / ours | unconverged fits |")
        print("|---|---|---|---|---|---|---|---|")
        for r in px:
            print(f"| {r['case']} | {r['t_old']:.1f} | {r['t_new']:.1f} | **{r['t_old'] / r['t_new']:.1f}x** | "
                  f"{r['old_wd']:.3g} / {r['new_wd']:.3g} | {r['old_top1']:.2f} / {r['new_top1']:.2f} | "
                  f"{r['old_val']:.2f} / {r['new_val']:.2f} | {r['unconv'][0]} / {r['unconv'][1]} |")
    try:
        print("\n`uptime`: " + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    except OSError:
        pass


if __name__ == "__main__":
    main()
