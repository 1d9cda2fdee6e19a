"""Proxies and feature extraction against their reference implementations, in one run.

    python benchmarks/bench_proxies.py [--per-class 500] [--threads 2]

Features: efficientnet_lite0 (packaged ImageNet weights) at 64 px on Fashion-MNIST (Debian package; falls back to
MNIST-5k), extracted once through our cached path. Prints time ratios (reference / ours) and accuracies.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402

from benchmark.config import DatasetEntry, DatasetsConfig, ModelEntry, Settings  # noqa: E402
from benchmark.data.sources import FASHION_MNIST_DIR  # noqa: E402
from benchmark.features import FeatureCache  # noqa: E402
from benchmark.runner import GroupContext, RunOptions, RunSummary  # noqa: E402
from benchmark.proxies import get_proxy  # noqa: E402
from benchmark.proxies.knn import cosine_topk  # noqa: E402
from benchmark.proxies.linear import default_wds, standardisation  # noqa: E402


def timed(fn, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=500, help="training images per class")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timings are the best of this many runs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    name = "fashion_mnist" if FASHION_MNIST_DIR.is_dir() else "mnist5k"
    entry = DatasetEntry(name=name, packaged=name, resolution=64, max_train_per_class=args.per_class,
                         max_test_per_class=200)
    model = ModelEntry(name="lite0", package="efficientnet_lite0")
    dsets = DatasetsConfig("benchmark", [entry], Settings(batch_size=128), {})
    feats, best_extract = {}, float("inf")
    for _ in range(args.repeat):  # the real runner path, cache writes included; a fresh cache each time
        with tempfile.TemporaryDirectory() as tmp:
            ctx = GroupContext(model, entry, dsets, RunOptions(out=tmp), FeatureCache(tmp), RunSummary(), {})
            module = ctx.loaded.module
            with torch.inference_mode():
                module(torch.randn(128, 3, 64, 64))  # warm-up, as the bare loop gets
            t0 = time.perf_counter()
            feats = {split: ctx.features(split) for split in ("train", "val", "test")}
            best_extract = min(best_extract, time.perf_counter() - t0)
            pipeline = ctx.feature_key(entry, "train")["pipeline"]
    n_images = sum(len(f[1]) for f in feats.values())
    # Bare loop: the same model, batch size and input shape on tensors already in memory.
    x = torch.randn(128, 3, 64, 64)
    n_batches = (n_images + 127) // 128
    best_bare = float("inf")
    with torch.inference_mode():
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for _ in range(n_batches):
                module(x)
            best_bare = min(best_bare, time.perf_counter() - t0)
    ours_ips, bare_ips = n_images / best_extract, n_batches * 128 / best_bare
    print(f"data: {name}, train/val/test = {len(feats['train'][1])}/{len(feats['val'][1])}/{len(feats['test'][1])}, "
          f"features {feats['train'][0].shape[1]}-d; torch threads {args.threads}; best of {args.repeat}")
    print(f"extraction ({pipeline} pipeline, cache write included): ours {ours_ips:.0f} img/s, bare forward loop "
          f"{bare_ips:.0f} img/s -> {100 * ours_ips / bare_ips:.0f}%")

    (trx, try_), (vax, vay), (tex, tey) = feats["train"], feats["val"], feats["test"]
    wds = default_wds(45)
    t_ours, ours = timed(lambda: get_proxy("linear")(trx, try_, tex, tey, val_x=vax, val_y=vay, wds=wds))

    def sklearn_sweep():
        mean, std = standardisation(trx)
        a, v = ((trx - mean) / std).numpy(), ((vax - mean) / std).numpy()
        clf = LogisticRegression(warm_start=True, max_iter=1000, tol=1e-4)
        scores = []
        for wd in sorted(wds, reverse=True):
            clf.set_params(C=1.0 / wd)
            clf.fit(a, try_.numpy())
            scores.append(100 * clf.score(v, vay.numpy()))
        best_wd = sorted(wds, reverse=True)[int(np.argmax(scores))]  # first maximum, as ours
        full = torch.cat([trx, vax])
        mean, std = standardisation(full)
        clf = LogisticRegression(C=1.0 / best_wd, max_iter=1000, tol=1e-4)
        clf.fit(((full - mean) / std).numpy(), torch.cat([try_, vay]).numpy())
        return 100 * clf.score(((tex - mean) / std).numpy(), tey.numpy()), best_wd, scores
    t_sk, (sk_acc, sk_wd, sk_curve) = timed(sklearn_sweep)
    gap = np.abs(np.array(ours["val_curve"]) - np.array(sk_curve))
    same_wd = get_proxy("linear")(trx, try_, tex, tey, val_x=vax, val_y=vay, wds=[sk_wd])
    print(f"linear, 45-value sweep + refit: ours {t_ours:.1f} s (test {ours['top1']:.2f}%, wd {ours['wd']:.3g}); "
          f"sklearn lbfgs warm-start {t_sk:.1f} s (test {sk_acc:.2f}%, wd {sk_wd:.3g}) -> {t_sk / t_ours:.1f}x faster")
    print(f"  validation accuracy along the sweep: max |ours - sklearn| = {gap.max():.2f} points, mean "
          f"{gap.mean():.2f}; at sklearn's wd ours gives test {same_wd['top1']:.2f}% "
          f"(|Δ| = {abs(same_wd['top1'] - sk_acc):.2f} points)")

    bank, bank_y = torch.cat([trx, vax]), torch.cat([try_, vay])
    t_knn, knn = timed(lambda: get_proxy("knn")(trx, try_, tex, tey, val_x=vax, val_y=vay), repeat=3)

    def sk_neighbours():
        nn = KNeighborsClassifier(n_neighbors=20, metric="cosine", algorithm="brute")
        nn.fit(bank.numpy(), bank_y.numpy())
        return nn.kneighbors(tex.numpy(), return_distance=False)

    def sk_predict():  # the same classifier: cosine distance d = 1 - sim, weights exp(sim / 0.07)
        nn = KNeighborsClassifier(n_neighbors=20, metric="cosine", algorithm="brute",
                                  weights=lambda dist: np.exp((1 - dist) / 0.07))
        nn.fit(bank.numpy(), bank_y.numpy())
        return 100 * np.mean(nn.predict(tex.numpy()) == tey.numpy())
    t_skn, sk_idx = timed(sk_neighbours, repeat=3)
    t_skp, sk_top1 = timed(sk_predict, repeat=3)
    _, idx = cosine_topk(bank, tex, 20)
    same = np.mean([set(a) == set(b) for a, b in zip(idx.numpy(), sk_idx)])
    print(f"knn k=20 cosine, T=0.07: ours {1000 * t_knn:.0f} ms (top1 {knn['top1']:.2f}%); sklearn brute predict "
          f"with the same weights {1000 * t_skp:.0f} ms (top1 {sk_top1:.2f}%) -> {t_skp / t_knn:.1f}x; sklearn "
          f"neighbours alone {1000 * t_skn:.0f} ms -> {t_skn / t_knn:.1f}x; identical neighbour sets "
          f"{100 * same:.1f}% of queries")


if __name__ == "__main__":
    main()
