"""Training-engine step throughput against a bare forward-backward-step loop, same model and batch.

    python benchmarks/bench_training.py [--model resnet18] [--res 64] [--batch 64] [--steps 20]

On CUDA it also compares bf16 autocast + channels_last against fp32 and reports ResNet-50 images/s at 224 px.
This measures the engine alone on pre-made tensors; bench_pipeline.py measures the real path of a run.
"""
from __future__ import annotations

import argparse
import time

import timm
import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmark.training.engine import fit
from benchmark.training.protocols import PROTOCOLS, BuildContext


def bare_loop(model, x, y, steps, device, amp):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp else torch.autocast("cpu", enabled=False)

    def step():
        with ctx:
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * len(y) / (time.perf_counter() - t0)


def engine_throughput(backbone, dim, x, y, steps, device, amp, protocol="finetune"):
    proto = PROTOCOLS.get(protocol)
    combo = proto.combos({**proto.defaults, "lr": 0.01, "wd": 0.0})[0] if protocol == "finetune" else \
        proto.combos(proto.defaults)[0]
    ctx = BuildContext(backbone, dim, 10, 0, None, None)
    setup = proto.build(ctx, combo)
    n = len(y) * (steps + 1)
    ds = TensorDataset(x.cpu().repeat(steps + 1, 1, 1, 1), y.cpu().repeat(steps + 1))
    val = TensorDataset(x.cpu()[:2], y.cpu()[:2])
    out = fit(setup, ds, val, epochs=1, batch_size=len(y), device=device, precision="bf16" if amp else "fp32")
    return out["images_per_s"], n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    backbone = timm.create_model(args.model, pretrained=False, num_classes=0).eval()
    dim = backbone.num_features
    x = torch.randn(args.batch, 3, args.res, args.res)
    y = torch.randint(0, 10, (args.batch,))
    amp = device.type == "cuda"
    ours, _ = engine_throughput(backbone, dim, x, y, args.steps, device, amp)
    model = nn.Sequential(timm.create_model(args.model, pretrained=False, num_classes=0), nn.Linear(dim, 10)).to(device)
    if amp:
        model = model.to(memory_format=torch.channels_last)
    xb = x.to(device).contiguous(memory_format=torch.channels_last) if amp else x.to(device)
    bare = bare_loop(model, xb, y.to(device), args.steps, device, amp)
    print(f"{args.model} {args.res}px batch {args.batch} on {device}: engine {ours:.1f} img/s (DataLoader + schedule + "
          f"per-epoch bookkeeping), bare loop {bare:.1f} img/s -> {100 * ours / bare:.0f}%")
    if device.type == "cuda":
        fp32_model = nn.Sequential(timm.create_model(args.model, num_classes=0), nn.Linear(dim, 10)).to(device)
        fp32 = bare_loop(fp32_model, x.to(device), y.to(device), args.steps, device, amp=False)
        print(f"bf16 + channels_last {bare:.0f} img/s vs fp32 {fp32:.0f} img/s -> {bare / fp32:.2f}x")
        r50 = timm.create_model("resnet50", num_classes=0).eval()
        x224 = torch.randn(128, 3, 224, 224)
        r50_ips, _ = engine_throughput(r50, 2048, x224, torch.randint(0, 10, (128,)), 20, device, True)
        print(f"resnet50 224px batch 128 finetune: {r50_ips:.0f} img/s")


if __name__ == "__main__":
    main()
