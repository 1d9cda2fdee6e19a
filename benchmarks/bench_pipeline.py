"""The real data path of a run against bare loops on in-memory device tensors, in one run.

    python benchmarks/bench_pipeline.py                       # CPU: ResNet-18, 64 px, batch 64, 2,048 JPEGs
    python benchmarks/bench_pipeline.py --device cuda         # GPU: ResNet-50, 224 px, batch 128, 5,000 JPEGs

Data: a folder of JPEGs (256 px, cut from scikit-image's photographs), read as a `folder:` dataset would be.
Real path: GroupContext decodes the split once into the pixel store (decode rate printed apart), then
  - fine-tune: `engine.fit` with the `finetune` protocol on the stored pixels, RandomResizedCrop + flip +
    normalise on the device, per-step cosine schedule (validation excluded from images/s, as the engine reports);
  - extraction: `GroupContext.features` (store -> device eval transform -> forward -> feature cache write).
Bare: the same model and batch size, forward-backward-SGD (or forward) on one batch already on the device.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from benchmark.config import DatasetEntry, DatasetsConfig, ModelEntry, Settings  # noqa: E402
from benchmark.data.augment import TrainTransform  # noqa: E402
from benchmark.features import FeatureCache  # noqa: E402
from benchmark.runner import GroupContext, RunOptions, RunSummary  # noqa: E402
from benchmark.training.engine import fit  # noqa: E402
from benchmark.training.protocols import PROTOCOLS, BuildContext  # noqa: E402


def make_jpegs(root, n, size=256, classes=10):
    from skimage import data as sk
    photos = [sk.astronaut(), sk.coffee(), sk.chelsea(), sk.rocket(), sk.hubble_deep_field()]
    rng = np.random.default_rng(0)
    for i in range(n):
        img = photos[i % len(photos)]
        r, c = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        d = root / "train" / f"c{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[r:r + size, c:c + size]).save(d / f"{i}.jpg", quality=90)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_train(model, x, y, steps, bf16, nhwc, device):
    model = model.to(device).train()
    if nhwc:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for _ in range(2):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * len(y) / (time.perf_counter() - t0)


@torch.inference_mode()
def bare_forward(model, x, steps, bf16, nhwc, device):
    model = model.to(device).eval()
    if nhwc:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        for _ in range(2):
            model(x)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            model(x)
        sync(device)
    return steps * len(x) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=None)
    ap.add_argument("--res", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--precision", default="auto", help="auto | bf16 | fp32 (engine); the bare loop uses the same")
    a = ap.parse_args()
    device = torch.device(a.device)
    gpu = device.type == "cuda"
    model_name = a.model or ("resnet50" if gpu else "resnet18")
    res, batch, n = a.res or (224 if gpu else 64), a.batch or (128 if gpu else 64), a.images or (5000 if gpu else 2048)
    name = torch.cuda.get_device_name(device) if gpu else platform.processor() or "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, timm {timm.__version__}, "
          f"{torch.get_num_threads()} threads; {model_name} at {res} px, batch {batch}, {n} JPEGs")
    with tempfile.TemporaryDirectory() as tmp:
        from pathlib import Path
        tmp = Path(tmp)
        make_jpegs(tmp / "img", n)
        entry = DatasetEntry(name="jpegs", folder=str(tmp / "img"), resolution=res, val_fraction=0.05)
        dsets = DatasetsConfig("bench", [entry], Settings(batch_size=batch, num_workers=min(8, os.cpu_count())), {})
        model = ModelEntry(name=model_name, timm=model_name, pretrained=False)
        ctx = GroupContext(model, entry, dsets, RunOptions(out=str(tmp / "r"), device=str(device)),
                           FeatureCache(tmp / "cache"), RunSummary(), {}, log=print)
        t0 = time.perf_counter()
        train = ctx.images("train")
        print(f"decode pass (once per split, PIL in {dsets.settings.num_workers} workers): "
              f"{len(train) / (time.perf_counter() - t0):.0f} img/s")
        ctx.images("val")
        ctx.images("test")

        # Extraction: the runner's path, features of every split, cache writes included.
        t0 = time.perf_counter()
        for split in ("train", "val", "test"):
            ctx.features(split)
        sync(device)
        n_feat = sum(len(ctx.images(s)) for s in ("train", "val", "test"))
        ours_fwd = n_feat / (time.perf_counter() - t0)
        x = torch.randn(batch, 3, res, res, device=device)
        bare_fwd = bare_forward(timm.create_model(model_name, num_classes=0), x, max(4, n_feat // batch), gpu, gpu,
                                device)
        print(f"extraction: real path {ours_fwd:.0f} img/s, bare forward {bare_fwd:.0f} img/s "
              f"-> {100 * ours_fwd / bare_fwd:.0f}%")

        # Fine-tuning: one epoch of the finetune protocol on the stored pixels with device augmentation.
        proto = PROTOCOLS.get("finetune")
        combo = proto.combos({**proto.defaults, "lr": 0.01, "wd": 0.0})[0]
        backbone = timm.create_model(model_name, num_classes=0)
        setup = proto.build(BuildContext(backbone, backbone.num_features, 10, 0, None, None), combo)
        cfg = ctx.loaded.data_config
        aug = train.with_transform(TrainTransform(res, cfg["mean"], cfg["std"]))
        val = ctx.images("val").subset(range(min(len(ctx.images("val")), batch)))
        out = fit(setup, aug, val, epochs=1, batch_size=batch, device=device, precision=a.precision, seed=0)
        prec = out["precision"]
        bf16, nhwc = prec["precision"] == "bf16", prec["channels_last"]
        y = torch.randint(0, 10, (batch,), device=device)
        bare = bare_train(nn.Sequential(timm.create_model(model_name, num_classes=0),
                                        nn.Linear(backbone.num_features, 10)), x, y, max(4, len(train) // batch),
                          bf16, nhwc, device)
        print(f"fine-tune: engine {out['images_per_s']:.0f} img/s ({prec['precision']}, channels_last "
              f"{prec['channels_last']}; {prec['how']}), bare step {bare:.0f} img/s -> "
              f"{100 * out['images_per_s'] / bare:.0f}%")


if __name__ == "__main__":
    main()
