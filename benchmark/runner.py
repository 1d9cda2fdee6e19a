"""The grid runner: cells (model, dataset, protocol, seed) grouped by (model, dataset) so that a model is loaded
and its features extracted at most once; every cell ends in one record, ok or error."""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import protocols as P
from .atomic import torch_save
from .config import DatasetsConfig, ZooConfig, as_dict, stable_hash
from .data import few_shot, load_source, plan_splits
from .errors import CellError, ConfigError, NotApplicable
from .data.sources import ArrayImages
from .features import (ArrayBatches, FeatureCache, TransformedSubset, batched_eval_transform, eval_transform, extract,
                       indices_digest)
from .models import load_model
from .proxies import get_proxy
from .records import STATUS_ERROR, STATUS_NA, STATUS_OK, is_done, provenance, record_path, write_record


@dataclass
class RunOptions:
    out: str = "results"  # records directory
    cache_dir: str | None = None  # feature cache; default <out>/.cache
    device: str = "cpu"  # torch device for extraction and training
    force: bool = False  # recompute cells that already have valid records
    models: list | None = None  # subset of zoo names
    datasets: list | None = None  # subset of dataset names
    protocols: list | None = None  # overrides settings.protocols
    seeds: list | None = None  # overrides settings.seeds
    shard: tuple = (0, 1)  # (index, count): this worker's share of (model, dataset) groups


@dataclass(frozen=True)
class Cell:
    model: str
    dataset: str
    protocol: str
    seed: int


@dataclass
class RunSummary:
    ok: int = 0
    skipped: int = 0
    errors: list = field(default_factory=list)
    not_applicable: int = 0  # cells recorded as not applicable (e.g. LEEP on a model without classifier)
    features_computed: int = 0
    features_cached: int = 0
    models_loaded: int = 0


def _select(all_names, wanted, kind, where):
    if not wanted:
        return list(all_names)
    for w in wanted:
        if w not in all_names:
            from .errors import unknown_name
            raise unknown_name(kind, w, all_names, where)
    return [n for n in all_names if n in wanted]


def plan_cells(zoo: ZooConfig, dsets: DatasetsConfig, opts: RunOptions) -> list[Cell]:
    """Deterministic cell order (config order), so shards of a cluster job agree on who does what."""
    models = _select([m.name for m in zoo.models], opts.models, "model", zoo.path)
    datasets = _select([d.name for d in dsets.datasets], opts.datasets, "dataset", dsets.path)
    protos = opts.protocols or dsets.settings.protocols
    for p in protos:
        P.kind_of(p, f"{dsets.path}: settings.protocols")
    seeds = opts.seeds if opts.seeds is not None else dsets.settings.seeds
    return [Cell(m, d, p, int(s)) for d in datasets for m in models for p in protos for s in seeds]


def protocol_hp(dsets: DatasetsConfig, protocol: str) -> dict:
    hp = dict(dsets.protocols.get(protocol) or {})
    P.check_hp(protocol, hp, f"{dsets.path}: protocols.{protocol}")
    return hp


def cell_config(zoo, dsets, cell: Cell) -> dict:
    model = next(m for m in zoo.models if m.name == cell.model)
    data = next(d for d in dsets.datasets if d.name == cell.dataset)
    cfg = {"model": as_dict(model), "dataset": as_dict(data), "protocol": cell.protocol,
           "hp": protocol_hp(dsets, cell.protocol), "seed": cell.seed}
    if P.kind_of(cell.protocol) == "train" and data.extra_test:
        cfg["extra_test"] = [as_dict(d) for d in dsets.datasets if d.name in data.extra_test]
    return cfg


class GroupContext:
    """Everything one (model, dataset) group shares: the dataset's splits, lazily the model, and features."""

    def __init__(self, model_entry, data_entry, dsets, opts, cache, summary, sources):
        self.model_entry, self.data_entry, self.dsets, self.opts = model_entry, data_entry, dsets, opts
        self.cache, self.summary, self._sources = cache, summary, sources
        self._loaded = None
        self.memo = {}  # per-group results reused across cells (e.g. the linear head for LP-FT)

    def source(self, entry=None):
        entry = entry or self.data_entry
        if entry.name not in self._sources:
            src = load_source(entry)
            self._sources[entry.name] = (src, plan_splits(entry, src))
        return self._sources[entry.name]

    @property
    def loaded(self):
        if self._loaded is None:
            self._loaded = load_model(self.model_entry, self.data_entry.resolution)
            self.summary.models_loaded += 1
        return self._loaded

    def feature_key(self, entry, split):
        src, plan = self.source(entry)
        official, idx = plan[split]
        model_id = as_dict(self.model_entry)
        if self.model_entry.checkpoint and "://" not in self.model_entry.checkpoint:
            p = Path(self.model_entry.checkpoint).expanduser()
            model_id["file"] = [p.stat().st_size, int(p.stat().st_mtime)] if p.exists() else None
        import timm
        return {"model": model_id, "model_name": self.model_entry.name, "timm": timm.__version__,
                "dataset": src.identity, "dataset_name": entry.name, "split": official,
                "indices": indices_digest(idx), "n": len(idx), "resolution": entry.resolution,
                "pipeline": "tensor" if self._batched(src.splits[official].data) else "pil"}

    @staticmethod
    def _batched(data) -> bool:
        """In-memory arrays of one image size take the batched tensor pipeline."""
        return isinstance(data, ArrayImages) and data.images.ndim in (3, 4) and data.images.dtype == np.uint8

    def features(self, split, entry=None):
        """(features, labels) of a planned split ('train', 'val', 'test'), from cache or one forward pass."""
        entry = entry or self.data_entry
        key = self.feature_key(entry, split)
        hit = self.cache.load(key)
        if hit is not None:
            self.summary.features_cached += 1
            return hit
        feats, labels, _ = self._extract(entry, split, key)
        return feats, labels

    def _extract(self, entry, split, key):
        """One forward pass over a split; caches features, labels and the source classifier's probabilities."""
        src, plan = self.source(entry)
        official, idx = plan[split]
        data = src.splits[official].data
        if self._batched(data):
            ds = ArrayBatches(data.images, data.labels, idx)
            batch_tf = batched_eval_transform(self.loaded.data_config, entry.resolution)
        else:
            ds = TransformedSubset(data, idx, eval_transform(self.loaded.data_config, entry.resolution))
            batch_tf = None
        head = self.loaded.source_head
        out = extract(self.loaded.module, ds, self.dsets.settings.batch_size, self.opts.device,
                      self.dsets.settings.num_workers, batch_transform=batch_tf, head=head,
                      desc=f"{self.model_entry.name}/{entry.name}/{split}")
        feats, labels, probs = out if head is not None else (*out, None)
        self.cache.save(key, feats, labels, source_probs=probs)
        self.summary.features_computed += 1
        return feats, labels, probs

    def source_probs(self, split):
        """The source classifier's probabilities on a split (stored beside its features), or NotApplicable."""
        key = self.feature_key(self.data_entry, split)
        known, probs = self.cache.source_probs(key)
        if not known:  # features cached before probabilities were stored: one more pass if there is a head
            probs = self._extract(self.data_entry, split, key)[2] if self.loaded.source_head is not None else None
        if probs is None:
            raise NotApplicable(f"model '{self.model_entry.name}' has no source classifier (no class "
                                f"probabilities to estimate from)")
        return probs

    def head_path(self, seed) -> Path:
        key = {"train": self.feature_key(self.data_entry, "train"), "val": self.feature_key(self.data_entry, "val"),
               "hp": protocol_hp(self.dsets, "linear"), "seed": seed, "shots": self.data_entry.shots}
        return self.cache.root / "heads" / f"{stable_hash(key, 32)}.pt"

    def linear_head(self, seed):
        """The linear probe's head for LP-FT: from this run, from disk, or (only if never solved) solved now."""
        if ("linear_head", seed) not in self.memo:
            path = self.head_path(seed)
            if path.exists():
                self.memo[("linear_head", seed)] = torch.load(path, weights_only=True)
            else:
                run_proxy_cell(self, Cell(self.model_entry.name, self.data_entry.name, "linear", seed),
                               protocol_hp(self.dsets, "linear"))
        return self.memo[("linear_head", seed)]

    def train_indices(self, seed):
        """Positions within the planned train split used by this seed (all, or a few-shot draw)."""
        _, plan = self.source()
        labels = self.source()[0].splits[plan["train"][0]].labels[plan["train"][1]]
        if self.data_entry.shots:
            return few_shot(labels, self.data_entry.shots, seed)
        return np.arange(len(labels))


def run_proxy_cell(ctx: GroupContext, cell: Cell, hp: dict) -> tuple[dict, dict, dict]:
    proxy = get_proxy(cell.protocol)
    device = torch.device(ctx.opts.device)
    tx, ty = ctx.features("train")
    sel = torch.as_tensor(ctx.train_indices(cell.seed))
    tx, ty = tx[sel].to(device), ty[sel].to(device)
    kwargs = dict(hp)
    sizes = {"train": len(ty)}
    args = [tx, ty]
    if proxy.needs_test:
        vx, vy = ctx.features("val")
        ex, ey = ctx.features("test")
        kwargs.update(val_x=vx.to(device), val_y=vy.to(device))
        args += [ex.to(device), ey.to(device)]
        sizes.update(val=len(vy), test=len(ey))
    if "seed" in P.proxy_hp_names(cell.protocol):
        kwargs.setdefault("seed", cell.seed)
    if proxy.needs_source_probs:
        kwargs["source_probs"] = ctx.source_probs("train")[sel].to(device)
    out = proxy(*args, **kwargs)
    if "head" in out:
        head = tuple(t.cpu() for t in out.pop("head"))
        ctx.memo[("linear_head", cell.seed)] = head
        torch_save(head, ctx.head_path(cell.seed))
    chosen = {k: out.pop(k) for k in proxy.hp_keys if k in out}
    extra = {"n": sizes, "feature_dim": int(tx.shape[1]), "num_classes": int(torch.unique(ty).numel()),
             "primary": proxy.primary, "higher_is_better": proxy.higher_is_better}
    return out, chosen, extra


def run_cell(ctx: GroupContext, cell: Cell, hp: dict):
    if P.kind_of(cell.protocol) == "proxy":
        return run_proxy_cell(ctx, cell, hp)
    from .training.runner import run_training_cell
    return run_training_cell(ctx, cell, hp)


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}" if not isinstance(e, (CellError, ConfigError)) else msg


def run_grid(zoo: ZooConfig, dsets: DatasetsConfig, opts: RunOptions, log=print) -> RunSummary:
    cells = plan_cells(zoo, dsets, opts)
    hps = {p: protocol_hp(dsets, p) for p in {c.protocol for c in cells}}
    cache = FeatureCache(opts.cache_dir or Path(opts.out) / ".cache")
    summary, sources = RunSummary(), {}
    groups: dict = {}
    for c in cells:
        groups.setdefault((c.model, c.dataset), []).append(c)
    index, count = opts.shard
    models = {m.name: m for m in zoo.models}
    datas = {d.name: d for d in dsets.datasets}
    for gi, ((model_name, data_name), group) in enumerate(groups.items()):
        if gi % count != index:
            continue
        todo = []
        for c in group:
            cfg = cell_config(zoo, dsets, c)
            path = record_path(opts.out, c.model, c.dataset, c.protocol, c.seed)
            h = stable_hash(cfg)
            if not opts.force and is_done(path, h):
                summary.skipped += 1
            else:
                todo.append((c, cfg, h, path))
        if not todo:
            continue
        ctx = GroupContext(models[model_name], datas[data_name], dsets, opts, cache, summary, sources)
        for c, cfg, h, path in todo:
            t0 = time.perf_counter()
            record = {"model": c.model, "dataset": c.dataset, "protocol": c.protocol, "seed": c.seed,
                      "config": cfg, "config_hash": h}
            try:
                metrics, chosen, extra = run_cell(ctx, c, hps[c.protocol])
                record.update(status=STATUS_OK, metrics=metrics, hyperparameters=chosen, **extra)
                summary.ok += 1
                shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
                log(f"[ok]    {c.model} × {c.dataset} × {c.protocol} (seed {c.seed}): {shown}")
            except KeyboardInterrupt:
                raise
            except NotApplicable as e:  # a final state of its own, not an error: never retried
                record.update(status=STATUS_NA, reason=str(e))
                summary.not_applicable += 1
                log(f"[n/a]   {c.model} × {c.dataset} × {c.protocol} (seed {c.seed}): {e}")
            except Exception as e:  # noqa: BLE001 - a failing cell becomes an error record; the grid goes on
                msg = _one_line(e)
                record.update(status=STATUS_ERROR, error=msg, traceback=traceback.format_exc(limit=8))
                summary.errors.append((c, msg))
                log(f"[error] {c.model} × {c.dataset} × {c.protocol} (seed {c.seed}): {msg}")
            record["provenance"] = provenance(opts.device, time.perf_counter() - t0)
            write_record(path, record)
    return summary
