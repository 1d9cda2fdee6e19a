"""One training cell: sweep on validation (resumable), evaluate the chosen run on test and OOD sets,
compute diagnostics; the record is written by the grid runner only when all of this finishes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import timm
import torch
from torch.utils.data import DataLoader

from ..atomic import torch_save, write_text
from ..config import stable_hash
from ..errors import CellError
from ..features import TransformedSubset, eval_transform
from .diagnostics import diagnostics
from .engine import evaluate, fit, is_oom, trained_fraction
from .protocols import PROTOCOLS, BuildContext


def train_transform(data_config: dict, resolution: int | None, scale_min: float):
    size = resolution or data_config["input_size"][-1]
    return timm.data.create_transform(input_size=(3, size, size), is_training=True, scale=(scale_min, 1.0),
                                      hflip=0.5, color_jitter=None, auto_augment=None, re_prob=0.0,
                                      interpolation=data_config["interpolation"], mean=data_config["mean"],
                                      std=data_config["std"])


def _mapped_test(ctx, entry, main_classes, transform):
    """An extra test set in the main label space: classes renamed by `class_map`, unmatched classes dropped."""
    src, plan = ctx.source(entry)
    official, idx = plan["test"]
    index = {c: i for i, c in enumerate(main_classes)}
    mapping = np.full(len(src.classes), -1)
    for i, c in enumerate(src.classes):
        mapping[i] = index.get(entry.class_map.get(c, c), -1)
    if (mapping < 0).all():
        raise CellError(f"extra_test '{entry.name}': none of its classes {src.classes[:5]} match the main dataset's; "
                        f"set class_map on it")
    labels = src.splits[official].labels[idx]
    keep = idx[mapping[labels] >= 0]
    return TransformedSubset(src.splits[official].data, keep, transform, label_map=mapping)


def run_training_cell(ctx, cell, overrides: dict):
    proto = PROTOCOLS.get(cell.protocol)
    hp = {**proto.defaults, **overrides}
    opts, settings, entry = ctx.opts, ctx.dsets.settings, ctx.data_entry
    device = opts.device
    src, plan = ctx.source()
    cfg = ctx.loaded.data_config
    ev, tr = eval_transform(cfg, entry.resolution), train_transform(cfg, entry.resolution, hp["crop_scale_min"])
    train_off, train_idx = plan["train"]
    train_idx = train_idx[ctx.train_indices(cell.seed)]
    train_ds = TransformedSubset(src.splits[train_off].data, train_idx, tr)
    train_eval = TransformedSubset(src.splits[train_off].data, train_idx, ev)
    val_ds = TransformedSubset(src.splits[plan["val"][0]].data, plan["val"][1], ev)
    test_ds = TransformedSubset(src.splits[plan["test"][0]].data, plan["test"][1], ev)
    num_classes = len(src.classes)
    pristine = ctx.loaded.module
    feature_dim = ctx.features("test")[0].shape[1]

    def linear_head():
        return ctx.linear_head(cell.seed)

    def target_batches():
        for x, _ in DataLoader(train_eval, batch_size=hp["batch_size"], shuffle=False):
            yield x

    bctx = BuildContext(pristine, feature_dim, num_classes, cell.seed, linear_head, target_batches)
    ckdir = Path(opts.out) / cell.dataset / cell.model / f"{cell.protocol}__seed{cell.seed}.ckpt"
    ckdir.mkdir(parents=True, exist_ok=True)
    for stale in ckdir.glob("*.tmp.*"):  # a task killed mid-write (scancel: SIGKILL after KillWait) left it; only
        stale.unlink(missing_ok=True)   # the task that owns this cell's shard writes here
    progress_path = ckdir / "progress.json"
    progress = json.loads(progress_path.read_text()) if progress_path.exists() else {"done": {}, "best": None}
    notes, sweep = [], []
    batch_size = hp["batch_size"]

    def run_combo(combo):
        nonlocal batch_size
        key = stable_hash(combo)
        if key in progress["done"]:
            result = progress["done"][key]
        else:
            while True:
                try:
                    setup = proto.build(bctx, combo)
                    result = fit(setup, train_ds, val_ds, epochs=combo["epochs"], batch_size=batch_size,
                                 momentum=combo["momentum"], warmup_epochs=combo["warmup_epochs"], device=device,
                                 seed=cell.seed, num_workers=settings.num_workers, ckpt=ckdir / f"{key}.pt")
                    break
                except RuntimeError as e:
                    if not is_oom(e) or batch_size <= 1:
                        raise
                    batch_size //= 2
                    notes.append(f"out of memory: batch size halved to {batch_size}")
                    (ckdir / f"{key}.pt").unlink(missing_ok=True)
                    torch.cuda.empty_cache()
            result.update(trained_fraction(setup), notes=setup.notes + result.pop("notes", []), hp=combo)
            if progress["best"] is None or result["val_top1"] > progress["done"][progress["best"]]["val_top1"]:
                torch_save(setup.model.state_dict(), ckdir / "best.pt")
                progress["best"] = key
            progress["done"][key] = result
            write_text(progress_path, json.dumps(progress))
            (ckdir / f"{key}.pt").unlink(missing_ok=True)
        point = {"hp": {k: combo[k] for k in combo if k in ("lr", "wd", "lr_backbone", "lr_head")},
                 "val_top1": result["val_top1"]}
        if point not in sweep:  # DAFT's second stage revisits the first stage's winner
            sweep.append(point)
        return result

    if proto.staged:
        chosen = {}
        for stage, key in enumerate(proto.staged):
            results = [(run_combo(c), c) for c in proto.combos(hp, chosen, stage)]
            chosen[key] = max(results, key=lambda rc: rc[0]["val_top1"])[1][key]
    else:
        for combo in proto.combos(hp):
            run_combo(combo)
    best = progress["done"][progress["best"]]
    setup = proto.build(bctx, best["hp"])
    setup.model.load_state_dict(torch.load(ckdir / "best.pt", map_location="cpu", weights_only=True))
    setup.model.to(device)
    eval_bs = settings.batch_size
    metrics = evaluate(setup.model, test_ds, eval_bs, device, settings.num_workers)
    metrics["val_top1"] = best["val_top1"]
    for other_name in entry.extra_test:
        other = next(d for d in ctx.dsets.datasets if d.name == other_name)
        ood = _mapped_test(ctx, other, src.classes, ev)
        acc = evaluate(setup.model, ood, eval_bs, device, settings.num_workers)
        metrics[f"ood_{other_name}_top1"] = acc["top1"]
        metrics[f"ood_{other_name}_mean_per_class"] = acc["mean_per_class"]
    diag = diagnostics(setup.model, pristine, test_ds, train_eval, eval_bs, device)
    chosen = {k: best["hp"][k] for k in ("lr", "wd", "lr_backbone", "lr_head", "epochs", "bn_layers", "block")
              if k in best["hp"]}
    extra = {"n": {"train": len(train_ds), "val": len(val_ds), "test": len(test_ds)}, "feature_dim": feature_dim,
             "num_classes": num_classes, "primary": "top1", "higher_is_better": True,
             "training": {"val_curve": best["val_curve"], "sweep": sweep, "batch_size": best["batch_size"],
                          "images_per_s": best["images_per_s"], "notes": best["notes"] + notes,
                          **{k: best[k] for k in ("trained_backbone_params", "backbone_params",
                                                  "trained_fraction_backbone", "trained_params_total")}},
             "diagnostics": diag}
    shutil.rmtree(ckdir, ignore_errors=True)
    return metrics, chosen, extra
