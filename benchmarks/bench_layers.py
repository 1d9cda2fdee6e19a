"""All layers in one pass against the last-layer forward, same images, one run.

    python benchmarks/bench_layers.py [--models resnet50,vit_small_patch16_224,efficientnet_lite0] [--n 64]
                                      [--size 224] [--repeat 3] [--threads 2] [--device cpu]

For each model: `features.extract` (today's path: pooled penultimate features only) and `layers.extract_layers`
with every layer `available_layers` lists (timm forward_intermediates + on-device pooling of every block), timed
alternately on the same stored images; the best of `repeat` each. Weights are random (timing does not depend on
them; no download). Prints seconds and the ratio all-layers / last-only.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402

from benchmark.data.augment import EvalTransform  # noqa: E402
from benchmark.data.loader import StoredImages  # noqa: E402
from benchmark.features import extract  # noqa: E402
from benchmark.layers import available_layers, extract_layers  # noqa: E402


def images(n, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8).numpy()
    return StoredImages(pixels, torch.zeros(n, dtype=torch.long), np.arange(n),
                        EvalTransform(size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="resnet50,vit_small_patch16_224,efficientnet_lite0")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    imgs = images(args.n, args.size)
    print(f"{args.n} images at {args.size} px, batch {args.batch}, {args.device}, {args.threads} threads, "
          f"best of {args.repeat} alternating; load {os.getloadavg()[0]:.1f}")
    print(f"{'model':<24} {'layers':>6} {'last only s':>12} {'all layers s':>13} {'ratio':>6}")
    for name in args.models.split(","):
        torch.manual_seed(0)
        kw = {"img_size": args.size} if "vit" in name else {}
        module = timm.create_model(name, pretrained=False, num_classes=0, **kw).eval()
        table = available_layers(module, args.size)
        names = [t.name for t in table]
        last_t, all_t = [], []
        extract(module, imgs, args.batch, args.device, desc="warm-up")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            ref = extract(module, imgs, args.batch, args.device, desc="last")[0]
            last_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            got = extract_layers(module, imgs, table, names, args.batch, args.device, desc="all")[0]
            all_t.append(time.perf_counter() - t0)
        assert torch.allclose(got["last"], ref, rtol=1e-4, atol=1e-4)  # the same features at 'last'
        a, b = min(last_t), min(all_t)
        print(f"{name:<24} {len(names):>6} {a:>12.3f} {b:>13.3f} {b / a:>6.3f}")
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
