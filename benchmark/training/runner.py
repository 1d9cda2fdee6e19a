"""One training cell: sweep on validation (resumable), evaluate the chosen run on test and OOD sets,
compute diagnostics; the record is written by the grid runner only when all of this finishes, and the cell's
checkpoint folder is deleted by the grid runner only after that record is on disk."""
from __future__ import annotations

import json
import shutil
import dataclasses
from pathlib import Path

import torch

from ..atomic import torch_save, write_text
from ..config import stable_hash
from ..data.augment import TrainTransform
from ..errors import CellError
from ..seeding import derive_seed, seed_everything
from .diagnostics import diagnostics
from .engine import evaluate, fit, is_oom, trained_fraction
from .protocols import PROTOCOLS, BuildContext


def _mapped_test(ctx, entry, main_classes):
    """An extra test set in the main label space: classes renamed by `class_map`, unmatched classes dropped."""
    src, _ = ctx.source(entry)
    index = {c: i for i, c in enumerate(main_classes)}
    mapping = torch.tensor([index.get(entry.class_map.get(c, c), -1) for c in src.classes], dtype=torch.long)
    if (mapping < 0).all():
        raise CellError(f"extra_test '{entry.name}': none of its classes {src.classes[:5]} match the main dataset's; "
                        f"set class_map on it")
    images = ctx.images("test", entry)
    mapped = mapping[images.labels]
    keep = torch.nonzero(mapped >= 0).flatten().numpy()
    view = images.subset(keep)
    return dataclasses.replace(view, labels=mapped[torch.as_tensor(keep)])


def training_warnings(result: dict, val_labels: torch.Tensor) -> list:
    """Runs a reader should not trust silently: ending at chance, or below the run's own first epoch."""
    out = []
    curve = result["val_curve"]
    chance = 100.0 * torch.bincount(val_labels).max().item() / len(val_labels)  # majority-class rate
    if curve and curve[-1] <= chance + 1e-9:
        out.append(f"chosen run ends at chance (val top1 {curve[-1]:.2f} <= majority-class rate {chance:.2f})")
    if len(curve) > 1 and curve[-1] < curve[0]:
        out.append(f"chosen run ends below its own first epoch (val top1 {curve[-1]:.2f} < {curve[0]:.2f})")
    return out


def checkpoint_dir(record_path: Path) -> Path:
    """A training cell's resumable state, beside its record: `<protocol>__seed<k>.ckpt/`."""
    return Path(record_path).with_suffix(".ckpt")


def open_checkpoints(ckdir: Path, config_hash: str, log=print) -> None:
    """Make `ckdir` hold only checkpoints of the cell config `config_hash` (model identity, dataset entry and its
    files' fingerprint, the whole hp sweep, seed): a folder left by any other config (images rewritten, lr list
    changed, ...) or of unknown origin is discarded and logged, so a resume only ever continues the same work.
    The sweep point's own key (its hp combo) cannot tell those apart; the cell's hash can."""
    marker = ckdir / "config_hash"
    if ckdir.exists():
        try:
            have = marker.read_text().strip()
        except OSError:
            have = None
        if have != config_hash:
            shutil.rmtree(ckdir)
            log(f"        discarded checkpoints in {ckdir}: made for cell config {have or 'unknown'}, "
                f"this cell's is {config_hash}")
    ckdir.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        write_text(marker, config_hash)


def block_layers(backbone) -> list[list[str]]:
    """Per Layer-FT block (1-based position k-1): the module names whose output is that block's output, to match
    against the layer names of per-layer proxy records (`bench report`'s block-choice table): the block's own
    qualified name, and its parent's when it is the parent's last child (ResNet: 'layer3.1' is also 'layer3')."""
    from .surgery import blocks_of
    names = {id(m): n for n, m in backbone.named_modules()}
    mods = dict(backbone.named_modules())
    out = []
    for block in blocks_of(backbone)[0]:
        name = names[id(block)]
        both = [name]
        parent = name.rsplit(".", 1)[0] if "." in name else None
        if parent in mods and list(mods[parent].children())[-1] is block:
            both.append(parent)
        out.append(both)
    return out


def run_training_cell(ctx, cell, overrides: dict, config_hash: str, record_path: Path):
    proto = PROTOCOLS.get(cell.protocol)
    hp = {**proto.defaults, **{k: v for k, v in overrides.items() if k != "diagnostics"}}  # a list, not a sweep
    opts, settings, entry = ctx.opts, ctx.dsets.settings, ctx.data_entry
    device = opts.device
    src, plan = ctx.source()
    cfg = ctx.loaded.data_config
    positions = ctx.train_indices(cell.seed)
    train_eval = ctx.images("train").subset(positions)
    size = train_eval.transform.size
    train_ds = train_eval.with_transform(TrainTransform(size, cfg["mean"], cfg["std"],
                                                        scale=(hp["crop_scale_min"], 1.0),
                                                        resize=hp["train_resize"]))
    val_ds, test_ds = ctx.images("val"), ctx.images("test")
    num_classes = len(src.classes)
    pristine = ctx.loaded.module
    feature_dim = ctx.features("test")[0].shape[1]

    def linear_head():
        return ctx.linear_head(cell.seed)

    def target_batches():
        for x, _ in train_eval.batches(hp["batch_size"], device):
            yield x

    block_choice = None
    if hp.get("block") == "auto":  # once per cell, before the sweep: every sweep point tunes the same block
        from .block_choice import choose_block
        block_choice = choose_block(pristine, train_eval.batches(settings.batch_size, device), hp["block_proxy"],
                                    device)
        hp["block"] = block_choice["block"]
    bctx = BuildContext(pristine, feature_dim, num_classes, cell.seed, linear_head, target_batches)
    ckdir = checkpoint_dir(record_path)
    open_checkpoints(ckdir, config_hash, ctx.log)
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
                    seed_everything(derive_seed("combo", cell.seed, key))
                    setup = proto.build(bctx, combo)
                    result = fit(setup, train_ds, val_ds, epochs=combo["epochs"], batch_size=batch_size,
                                 momentum=combo["momentum"], warmup_epochs=combo["warmup_epochs"], device=device,
                                 precision=combo["precision"], compile=combo["compile"],
                                 seed=derive_seed("fit", cell.seed, key), ckpt=ckdir / f"{key}.pt")
                    break
                except FloatingPointError as e:  # this sweep point diverged: recorded, never chosen
                    result = {"val_curve": [], "val_top1": float("-inf"), "images_per_s": None,
                              "batch_size": batch_size, "images": 0, "diverged": str(e)}
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
                 "val_top1": result["val_top1"], **({"diverged": True} if "diverged" in result else {})}
        if "block" in combo:  # Layer-FT / SCL-FT: the block this point tuned (0, the default, resolved)
            from .surgery import blocks_of
            point["hp"]["block"] = int(combo["block"] or blocks_of(pristine)[2])
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
    if best["val_top1"] == float("-inf"):
        raise CellError(f"training diverged at every sweep point ({best.get('diverged')}); lower the lr")
    setup = proto.build(bctx, best["hp"])
    setup.model.load_state_dict(torch.load(ckdir / "best.pt", map_location="cpu", weights_only=True))
    setup.model.to(device)
    eval_bs = settings.batch_size
    metrics = evaluate(setup.model, test_ds, eval_bs, device)
    metrics["val_top1"] = best["val_top1"]
    for other_name in entry.extra_test:
        other = next(d for d in ctx.dsets.datasets if d.name == other_name)
        ood = _mapped_test(ctx, other, src.classes)
        acc = evaluate(setup.model, ood, eval_bs, device)
        metrics[f"ood_{other_name}_top1"] = acc["top1"]
        metrics[f"ood_{other_name}_mean_per_class"] = acc["mean_per_class"]
    diag = diagnostics(setup.model, pristine, test_ds, train_eval, eval_bs, device)
    names = overrides.get("diagnostics") or []
    if "layer_nc1" in names:  # the paper's Fig. 10: per-block NC1 on the training split, trained vs pretrained
        from .block_choice import layer_nc1
        diag["layer_nc1"] = layer_nc1(setup.model.backbone, pristine, train_eval.batches(eval_bs, device), device)
    if set(names) - {"layer_nc1"}:  # Neyshabur et al.'s transfer diagnostics, opt-in for their cost
        from .transfer import transfer_diagnostics
        diag["transfer"] = transfer_diagnostics(setup.model, pristine, test_ds.batches(eval_bs, device), device,
                                                overrides["diagnostics"], ckdir.with_suffix(".final.pt"))
    chosen = {k: best["hp"][k] for k in ("lr", "wd", "lr_backbone", "lr_head", "epochs", "bn_layers", "block",
                                         *(("block_proxy",) if block_choice else ()))
              if k in best["hp"]}
    extra = {"n": {"train": len(train_ds), "val": len(val_ds), "test": len(test_ds)}, "feature_dim": feature_dim,
             "num_classes": num_classes, "primary": "top1", "higher_is_better": True,
             "training": {"val_curve": best["val_curve"], "sweep": sweep, "batch_size": best["batch_size"],
                          "images_per_s": best["images_per_s"], "notes": best["notes"] + notes,
                          "precision": best.get("precision"), "compile_s": best.get("compile_s"),
                          **{k: best[k] for k in ("trained_backbone_params", "backbone_params",
                                                  "trained_fraction_backbone", "trained_params_total")},
                          **({"block_layers": block_layers(pristine)} if "block" in best["hp"] else {})},
             "diagnostics": diag, "warnings": training_warnings(best, val_ds.labels),
             **({"block_choice": block_choice} if block_choice else {}),
             "images_processed": sum(r.get("images", 0) for r in progress["done"].values())}
    return metrics, chosen, extra
