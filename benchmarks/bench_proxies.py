"""Proxies and feature extraction against their reference implementations, in one run.

    python benchmarks/bench_proxies.py [--per-class 500] [--threads 2]

Features: efficientnet_lite0 (packaged ImageNet weights) at 64 px on Fashion-MNIST (Debian package; falls back to
MNIST-5k), extracted once through our cached path. Prints time ratios (reference / ours) and accuracies.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402

from benchmark.config import DatasetEntry, ModelEntry  # noqa: E402
from benchmark.data import load_source, plan_splits  # noqa: E402
from benchmark.data.sources import FASHION_MNIST_DIR  # noqa: E402
from benchmark.features import TransformedSubset, eval_transform, extract  # noqa: E402
from benchmark.models import load_model  # noqa: E402
from benchmark.proxies import get_proxy  # noqa: E402
from benchmark.proxies.knn import cosine_topk  # noqa: E402
from benchmark.proxies.linear import default_wds  # noqa: E402


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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    name = "fashion_mnist" if FASHION_MNIST_DIR.is_dir() else "mnist5k"
    entry = DatasetEntry(name=name, packaged=name, resolution=64, max_train_per_class=args.per_class,
                         max_test_per_class=200)
    src = load_source(entry)
    plan = plan_splits(entry, src)
    loaded = load_model(ModelEntry(name="lite0", package="efficientnet_lite0"))
    tf = eval_transform(loaded.data_config, 64)
    feats = {}
    extract_time, n_images = 0.0, 0
    for split in ("train", "val", "test"):
        off, idx = plan[split]
        ds = TransformedSubset(src.splits[off].data, idx, tf)
        t, feats[split] = timed(lambda: extract(loaded.module, ds, batch_size=128))
        extract_time += t
        n_images += len(idx)
    # Bare loop: the same model, batch size and input shape on tensors already in memory.
    x = torch.randn(128, 3, 64, 64)
    n_batches = (n_images + 127) // 128
    with torch.inference_mode():
        loaded.module.eval()(x)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            loaded.module(x)
        bare = time.perf_counter() - t0
    print(f"data: {name}, train/val/test = {len(feats['train'][1])}/{len(feats['val'][1])}/{len(feats['test'][1])}, "
          f"features {feats['train'][0].shape[1]}-d; torch threads {args.threads}")
    print(f"extraction: ours {n_images / extract_time:.0f} img/s (decode + resize + forward), bare forward loop "
          f"{n_batches * 128 / bare:.0f} img/s -> {100 * (n_images / extract_time) / (n_batches * 128 / bare):.0f}%")

    (trx, try_), (vax, vay), (tex, tey) = feats["train"], feats["val"], feats["test"]
    wds = default_wds(45)
    t_ours, ours = timed(lambda: get_proxy("linear")(trx, try_, tex, tey, val_x=vax, val_y=vay, wds=wds))

    def sklearn_sweep():
        mean, std = trx.mean(0), trx.std(0).clamp_min(1e-6)
        a, v = ((trx - mean) / std).numpy(), ((vax - mean) / std).numpy()
        clf = LogisticRegression(warm_start=True, max_iter=1000, tol=1e-4)
        scores = []
        for wd in sorted(wds, reverse=True):
            clf.set_params(C=1.0 / wd)
            clf.fit(a, try_.numpy())
            scores.append((clf.score(v, vay.numpy()), wd))
        best_wd = max(scores, key=lambda s: s[0])[1]  # first maximum = strongest regularisation, as ours
        full = torch.cat([trx, vax])
        mean, std = full.mean(0), full.std(0).clamp_min(1e-6)
        clf = LogisticRegression(C=1.0 / best_wd, max_iter=1000, tol=1e-4)
        clf.fit(((full - mean) / std).numpy(), torch.cat([try_, vay]).numpy())
        return 100 * clf.score(((tex - mean) / std).numpy(), tey.numpy()), best_wd
    t_sk, (sk_acc, sk_wd) = timed(sklearn_sweep)
    print(f"linear, 45-value sweep + refit: ours {t_ours:.1f} s (test {ours['top1']:.2f}%, wd {ours['wd']:.3g}); "
          f"sklearn lbfgs warm-start {t_sk:.1f} s (test {sk_acc:.2f}%, wd {sk_wd:.3g}) -> {t_sk / t_ours:.1f}x faster, "
          f"|Δacc| = {abs(ours['top1'] - sk_acc):.2f} points")

    bank, bank_y = torch.cat([trx, vax]), torch.cat([try_, vay])
    t_knn, knn = timed(lambda: get_proxy("knn")(trx, try_, tex, tey, val_x=vax, val_y=vay), repeat=3)

    def sk_knn():
        nn = KNeighborsClassifier(n_neighbors=20, metric="cosine", algorithm="brute")
        nn.fit(bank.numpy(), bank_y.numpy())
        return nn.kneighbors(tex.numpy(), return_distance=False)
    t_skk, sk_idx = timed(sk_knn, repeat=3)
    _, idx = cosine_topk(bank, tex, 20)
    same = np.mean([set(a) == set(b) for a, b in zip(idx.numpy(), sk_idx)])
    print(f"knn k=20 cosine: ours {1000 * t_knn:.0f} ms (top1 {knn['top1']:.2f}%) incl. weighted vote; sklearn brute "
          f"neighbours only {1000 * t_skk:.0f} ms -> {t_skk / t_knn:.1f}x faster; identical neighbour sets "
          f"{100 * same:.1f}% of queries")


if __name__ == "__main__":
    main()
