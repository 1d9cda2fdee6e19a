"""The grid runner: cells (model, dataset, protocol, seed) grouped by (model, dataset) so that a model is loaded
and its features extracted at most once; every cell ends in one record, ok or error."""
from __future__ import annotations

import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import protocols as P
from .atomic import torch_save
from .config import NOT_IN_IDENTITY, DatasetsConfig, ZooConfig, as_dict, stable_hash
from .data import few_shot, load_source, plan_splits
from .errors import CellError, ConfigError, DiskFull, NotApplicable
from .data.augment import EvalTransform
from .data.loader import StoredImages
from .data.store import PixelStore, is_array_source, storage_size
from .features import FeatureCache, extract, feature_health, indices_digest
from .finite import check_finite
from .layer_plan import LayerTables, cell_layers, layer_key
from .layers import LAST, available_layers, extract_layers
from .leftovers import remove_dead_temps, tidy_finished_cell
from .locks import CellLock, claimed
from .seeding import cell_seed, seed_everything
from .stopping import check as check_stop
from .models import load_model
from .proxies import get_proxy
from .records import (STATUS_ERROR, STATUS_NA, STATUS_OK, is_done, provenance, read_record, record_path,
                      write_record)


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
    layer: str = LAST  # the features a proxy reads ('last': pooled penultimate); training cells: always 'last'


@dataclass
class RunSummary:
    ok: int = 0
    skipped: int = 0
    errors: list = field(default_factory=list)
    not_applicable: int = 0  # cells recorded as not applicable (e.g. LEEP on a model without classifier)
    features_computed: int = 0
    features_cached: int = 0
    models_loaded: int = 0
    busy: list = field(default_factory=list)  # cells claimed by another live run on the same --out


def _select(all_names, wanted, kind, where):
    if not wanted:
        return list(all_names)
    for w in wanted:
        if w not in all_names:
            from .errors import unknown_name
            raise unknown_name(kind, w, all_names, where)
    return [n for n in all_names if n in wanted]


def layer_tables(opts: RunOptions) -> LayerTables:
    return LayerTables(opts.cache_dir or Path(opts.out) / ".cache", model_identity)


def plan_cells(zoo: ZooConfig, dsets: DatasetsConfig, opts: RunOptions, tables: LayerTables | None = None
               ) -> list[Cell]:
    """Deterministic cell order (config order), so shards of a cluster job agree on who does what. Frozen-feature
    proxies run once per layer of the dataset's `layers` (default: 'last' only); LEEP-style proxies read the
    source classifier's output, which has no layer, and training cells train the whole network: 'last' only."""
    models = _select([m.name for m in zoo.models], opts.models, "model", zoo.path)
    datasets = _select([d.name for d in dsets.datasets], opts.datasets, "dataset", dsets.path)
    protos = opts.protocols or dsets.settings.protocols
    for p in protos:
        P.kind_of(p, f"{dsets.path}: settings.protocols")
    for p in dsets.settings.protocol_seeds:
        P.kind_of(p, f"{dsets.path}: settings.protocol_seeds")

    def seeds(p):  # --seed overrides both; a protocol named in protocol_seeds runs its own seeds
        if opts.seeds is not None:
            return opts.seeds
        return dsets.settings.protocol_seeds.get(p, dsets.settings.seeds)
    tables = tables or layer_tables(opts)
    zoo_by, data_by = {m.name: m for m in zoo.models}, {d.name: d for d in dsets.datasets}
    cells = []
    for d in datasets:
        for m in models:
            layers = None
            for p in protos:
                per_layer = P.kind_of(p) == "proxy" and not get_proxy(p).needs_source_probs
                if per_layer and layers is None:
                    layers = cell_layers(zoo_by[m], data_by[d], dsets.settings, tables, dsets.path)[0]
                cells += [Cell(m, d, p, int(s), lay) for lay in (layers if per_layer else [LAST]) for s in seeds(p)]
    return cells


def protocol_hp(dsets: DatasetsConfig, protocol: str) -> dict:
    hp = dict(dsets.protocols.get(protocol) or {})
    P.check_hp(protocol, hp, f"{dsets.path}: protocols.{protocol}")
    return hp


def model_identity(entry) -> dict:
    """The zoo entry, plus size and mtime of a local checkpoint file, so a replaced file invalidates caches.
    NOT_IN_IDENTITY (`meta`, published numbers for reports; `max_checkpoint_gb`, a safety limit) is left out:
    editing them must not invalidate records."""
    ident = {k: v for k, v in as_dict(entry).items() if k not in NOT_IN_IDENTITY}
    if entry.checkpoint and "://" not in entry.checkpoint:
        p = Path(entry.checkpoint).expanduser()
        ident["file"] = [p.stat().st_size, p.stat().st_mtime_ns] if p.exists() else None
    return ident


def new_costs() -> dict:
    return {"features_s": 0.0, "features_images": 0, "decode_s": 0.0, "extracted_s": 0.0}


def cell_config(zoo, dsets, cell: Cell, data_identity: dict | None = None) -> dict:
    """What determines a cell's result; its hash decides whether a record is still valid. `data_identity`
    (the source's file fingerprint) makes changed images invalidate records, not only cached features."""
    model = next(m for m in zoo.models if m.name == cell.model)
    data = next(d for d in dsets.datasets if d.name == cell.dataset)
    # `layers` plans which cells exist; it does not change a cell's result (old records stay valid)
    dataset = {k: v for k, v in as_dict(data).items() if k != "layers"}
    cfg = {"model": model_identity(model), "dataset": dataset, "protocol": cell.protocol,
           "hp": protocol_hp(dsets, cell.protocol), "seed": cell.seed}
    if cell.layer != LAST:
        cfg.update(layer=cell.layer, token_pool=dsets.settings.token_pool)
    if data_identity is not None:
        cfg["data_identity"] = data_identity
    if P.kind_of(cell.protocol) == "train" and data.extra_test:
        cfg["extra_test"] = [as_dict(d) for d in dsets.datasets if d.name in data.extra_test]
    return cfg


class GroupContext:
    """Everything one (model, dataset) group shares: the dataset's splits, lazily the model, and features."""

    def __init__(self, model_entry, data_entry, dsets, opts, cache, summary, sources, pixels=None, log=print):
        self.model_entry, self.data_entry, self.dsets, self.opts = model_entry, data_entry, dsets, opts
        self.cache, self.summary, self._sources = cache, summary, sources
        self.pixels = pixels or PixelStore(cache.root / "pixels")
        self.log = log
        self._loaded = None
        self.model_info = None  # {'model_identity', 'model_notes'}: from the loaded model or beside cached features
        self.memo = {}  # per-group results reused across cells (e.g. the linear head for LP-FT)
        self.layers = [LAST]  # layers this group's cells read: one forward pass extracts them all
        self.layer_index = {}  # layer -> depth position, when the group planned layers
        self.costs = new_costs()  # what the current cell used: reset by the grid runner per cell

    def source(self, entry=None):
        entry = entry or self.data_entry
        if entry.name not in self._sources:
            src = load_source(entry)
            self._sources[entry.name] = (src, plan_splits(entry, src))
        return self._sources[entry.name]

    @property
    def loaded(self):
        if isinstance(self._loaded, str):  # a load that failed once fails every cell of the group, not retried
            raise CellError(self._loaded)
        if self._loaded is None:
            try:
                self._loaded = load_model(self.model_entry, self.data_entry.resolution)
            except Exception as e:  # noqa: BLE001 - remembered as its one-line message, then re-raised
                self._loaded = _one_line(e)
                raise
            self.summary.models_loaded += 1
        return self._loaded

    def feature_key(self, entry, split):
        src, plan = self.source(entry)
        official, idx = plan[split]
        import timm
        return {"model": model_identity(self.model_entry), "model_name": self.model_entry.name,
                "timm": timm.__version__, "dataset": src.identity, "dataset_name": entry.name, "split": official,
                "indices": indices_digest(idx), "n": len(idx), "resolution": entry.resolution,
                "pipeline": "store-tensor" if is_array_source(src.splits[official].data) else "store-pil"}

    def images(self, split, entry=None) -> StoredImages:
        """The split's pixels from the store (decoded once, shared by every model with the same eval resize),
        as a view with the model's eval transform; `.with_transform()` swaps in training augmentation."""
        entry = entry or self.data_entry
        src, plan = self.source(entry)
        official, idx = plan[split]
        cfg = self.loaded.data_config
        size, scale = storage_size(cfg, entry.resolution)
        data = src.splits[official].data
        key = {"dataset": src.identity, "dataset_name": entry.name, "split": official,
               "indices": indices_digest(idx), "n": len(idx), "size": scale, "interpolation": cfg["interpolation"],
               "pipeline": "tensor" if is_array_source(data) else "pil"}
        memo = ("images", stable_hash(key))
        if memo not in self.memo:
            stored = self.pixels.get(key, data, idx, scale, cfg["interpolation"], self.dsets.settings.num_workers,
                                     desc=f"decode {entry.name}/{split}")
            if stored.decode:
                self.costs["decode_s"] += stored.decode["seconds"]
                self.log(f"        decoded {entry.name}/{split}: {stored.decode['images']} images at {scale} px, "
                         f"{stored.decode['images_per_s']:.0f} img/s")
            labels = torch.as_tensor(src.splits[official].labels[idx], dtype=torch.long)
            self.memo[memo] = StoredImages(stored.pixels, labels, np.arange(len(idx)),
                                           EvalTransform(size, cfg["mean"], cfg["std"]))
        return self.memo[memo]

    def features(self, split, entry=None, layer=LAST):
        """(features, labels) of a planned split ('train', 'val', 'test') at a layer, from cache or one forward
        pass (which, when the group reads several layers, extracts and caches all of them)."""
        entry = entry or self.data_entry
        key = layer_key(self.feature_key(entry, split), layer, self.dsets.settings.token_pool)
        memo = ("features", stable_hash(key, 32))
        if memo in self.memo:  # read from disk once per group: every proxy cell reads the same features
            self.summary.features_cached += 1
            feats, labels, cost = self.memo[memo]
        elif (hit := self.cache.load(key)) is not None:
            self.summary.features_cached += 1
            feats, labels, cost = hit
            self._cached_model_info(key)
        elif layer != LAST or (self.layers != [LAST] and entry is self.data_entry):
            if entry is not self.data_entry:
                raise CellError(f"layer '{layer}' features exist for the cell's own dataset only, not '{entry.name}'")
            feats, labels, cost = self._extract_layers(split, layer)
        else:  # one extraction per split across concurrent runs: wait for theirs rather than repeat it
            def wait(o):
                self.log(f"        waiting for {o.get('host', '?')}:{o.get('pid', '?')} to extract "
                         f"{self.model_entry.name}/{entry.name}/{split}")
            with claimed(self.cache.path(key), on_wait=wait):
                if (hit := self.cache.load(key)) is not None:  # theirs, finished while we waited
                    self.summary.features_cached += 1
                    feats, labels, cost = hit
                    self._cached_model_info(key)
                else:
                    feats, labels, _, cost = self._extract(entry, split, key)
        self.memo[memo] = (feats, labels, cost)
        if entry is self.data_entry and ("feature_health", split, layer) not in self.memo:  # cached or fresh alike
            self.memo[("feature_health", split, layer)] = feature_health(feats)
        self.costs["features_s"] += cost.get("seconds", 0.0)
        self.costs["features_images"] += cost.get("images", 0)
        return feats, labels

    def _cached_model_info(self, key):
        if self.model_info is None:
            self.model_info = self.cache.model_info(key)
        if self.model_info is None:  # features cached before model identities were stored: load it once for it
            self.model_info = {"model_identity": self.loaded.identity, "model_notes": self.loaded.notes}
            self.cache.save_model_info(key, self.model_info)

    def _extract(self, entry, split, key):
        """One forward pass over a split's stored pixels; caches features, labels and the source classifier's
        probabilities."""
        images = self.images(split, entry)
        head = self.loaded.source_head
        t0 = time.perf_counter()
        out = extract(self.loaded.module, images, self.dsets.settings.batch_size, self.opts.device, head=head,
                      desc=f"{self.model_entry.name}/{entry.name}/{split}")
        feats, labels, probs = out if head is not None else (*out, None)
        cost = {"seconds": round(time.perf_counter() - t0, 4), "images": len(labels)}
        self.costs["extracted_s"] += cost["seconds"]
        self.model_info = {"model_identity": self.loaded.identity, "model_notes": self.loaded.notes}
        self.cache.save(key, feats, labels, cost, source_probs=probs, model_info=self.model_info)
        self.summary.features_computed += 1
        return feats, labels, probs, cost

    def _extract_layers(self, split, layer):
        """One forward pass over a split that pools every layer this group reads (and 'last', with the source
        classifier's probabilities) and caches each under its own key; returns `layer`'s (features, labels, cost)."""
        entry = self.data_entry
        base = self.feature_key(entry, split)
        pool = self.dsets.settings.token_pool
        wanted = [n for n in dict.fromkeys([*self.layers, layer])
                  if n == layer or not self.cache.path(layer_key(base, n, pool)).exists()]
        images = self.images(split, entry)
        table = available_layers(self.loaded.module, images.transform.size)
        head = self.loaded.source_head
        t0 = time.perf_counter()
        feats, labels, probs = extract_layers(self.loaded.module, images, table, wanted, self.dsets.settings.batch_size,
                                              self.opts.device, token_pool=pool, head=head,
                                              desc=f"{self.model_entry.name}/{entry.name}/{split} x{len(wanted)}")
        cost = {"seconds": round(time.perf_counter() - t0, 4), "images": len(labels), "layers": len(feats)}
        self.costs["extracted_s"] += cost["seconds"]
        for name, f in feats.items():
            self.cache.save(layer_key(base, name, pool), f, labels, cost,
                            **({"source_probs": probs} if name == LAST else {}))
        self.summary.features_computed += 1
        return feats[layer], labels, cost

    def source_probs(self, split):
        """The source classifier's probabilities on a split (stored beside its features), or NotApplicable."""
        if ("source_probs", split) not in self.memo:
            key = self.feature_key(self.data_entry, split)
            known, probs = self.cache.source_probs(key)
            if not known:  # features cached before probabilities were stored: one more pass if there is a head
                probs = (self._extract(self.data_entry, split, key)[2] if self.loaded.source_head is not None
                         else None)
            self.memo[("source_probs", split)] = probs
        probs = self.memo[("source_probs", split)]
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

    def proxy_train(self, seed, device, layer=LAST):
        """The train features and labels a seed's proxies read: one tensor object per (seed, device, layer) in
        this group, so the statistics several estimators share (proxies/moments.py) are computed once."""
        tx, ty = self.features("train", layer=layer)  # charged to every cell that reads them, memoised or not
        idx = self.train_indices(seed)
        full = len(idx) == len(tx) and np.array_equal(idx, np.arange(len(tx)))  # no few-shot draw: seeds share
        key = ("proxy_train", None if full else seed, str(device), layer)
        if key not in self.memo:
            sel = torch.as_tensor(idx)
            self.memo[key] = (tx.to(device), ty.to(device)) if full else (tx[sel].to(device), ty[sel].to(device))
        return self.memo[key]

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
    layer = cell.layer
    tx, ty = ctx.proxy_train(cell.seed, device, layer)
    kwargs = dict(hp)
    sizes = {"train": len(ty)}
    args = [tx, ty]
    if proxy.needs_test:
        vx, vy = ctx.features("val", layer=layer)
        ex, ey = ctx.features("test", layer=layer)
        kwargs.update(val_x=vx.to(device), val_y=vy.to(device))
        args += [ex.to(device), ey.to(device)]
        sizes.update(val=len(vy), test=len(ey))
    if "seed" in P.proxy_hp_names(cell.protocol):
        kwargs.setdefault("seed", cell.seed)
    if proxy.needs_source_probs:
        if layer != LAST:
            raise NotApplicable(f"{cell.protocol} reads the source classifier's output, which has no layer "
                                f"'{layer}'; run it at 'last'")
        kwargs["source_probs"] = ctx.source_probs("train")[torch.as_tensor(ctx.train_indices(cell.seed))].to(device)
    out = proxy(*args, **kwargs)
    if "head" in out and layer != LAST:
        out.pop("head")  # LP-FT starts from the head on the penultimate features only
    if "head" in out:
        head = tuple(t.cpu() for t in out.pop("head"))
        ctx.memo[("linear_head", cell.seed)] = head
        torch_save(head, ctx.head_path(cell.seed))
    chosen = {k: out.pop(k) for k in proxy.hp_keys if k in out}
    extra = {"n": sizes, "feature_dim": int(tx.shape[1]), "num_classes": int(torch.unique(ty).numel()),
             "primary": proxy.primary, "higher_is_better": proxy.higher_is_better}
    if layer in ctx.layer_index:
        extra["layer_index"] = ctx.layer_index[layer]
    return out, chosen, extra


def run_cell(ctx: GroupContext, cell: Cell, hp: dict, config_hash: str, path: Path):
    if P.kind_of(cell.protocol) == "proxy":
        return run_proxy_cell(ctx, cell, hp)
    from .training.runner import run_training_cell
    return run_training_cell(ctx, cell, hp, config_hash, path)


def _label(c: Cell) -> str:
    layer = f" @ {c.layer}" if c.layer != LAST else ""
    return f"{c.model} × {c.dataset} × {c.protocol}{layer} (seed {c.seed})"


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}" if not isinstance(e, (CellError, ConfigError)) else msg


def data_identities(dsets, names, sources) -> dict:
    """Each dataset's source identity (file fingerprints), loading each source once per run."""
    out = {}
    for d in dsets.datasets:
        if d.name in names:
            try:
                if d.name not in sources:
                    src = load_source(d)
                    sources[d.name] = (src, plan_splits(d, src))
                out[d.name] = sources[d.name][0].identity
            except (CellError, ConfigError, OSError) as e:
                out[d.name] = {"unavailable": str(e).splitlines()[0] if str(e) else type(e).__name__}
    return out


def run_grid(zoo: ZooConfig, dsets: DatasetsConfig, opts: RunOptions, log=print) -> RunSummary:
    tables = layer_tables(opts)
    cells = plan_cells(zoo, dsets, opts, tables)
    hps = {p: protocol_hp(dsets, p) for p in {c.protocol for c in cells}}
    if dsets.settings.deterministic:
        # CUDA's nondeterministic kernels (atomics in some convolution backward passes, scatter_add, index_add)
        # are refused instead of used; cuBLAS needs this workspace setting for deterministic matmuls.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
    cache = FeatureCache(opts.cache_dir or Path(opts.out) / ".cache")
    pixels = PixelStore(cache.root / "pixels")
    summary, sources = RunSummary(), {}
    groups: dict = {}
    for c in cells:
        groups.setdefault((c.model, c.dataset), []).append(c)
    index, count = opts.shard
    models = {m.name: m for m in zoo.models}
    datas = {d.name: d for d in dsets.datasets}
    mine = [(k, g) for gi, (k, g) in enumerate(groups.items()) if gi % count == index]
    identities = data_identities(dsets, {k[1] for k, _ in mine}, sources)
    remove_dead_temps(opts.out, cache.root, log=log)
    contexts: dict = {}

    def context(c):  # one per group, made only when a cell of the group is computed
        if (c.model, c.dataset) not in contexts:
            contexts.clear()  # groups run one after the other: let the previous one's features go
            ctx = GroupContext(models[c.model], datas[c.dataset], dsets, opts, cache, summary, sources, pixels, log)
            # every layer the group's cells read comes out of one forward pass (cached per layer)
            ctx.layers = list(dict.fromkeys([LAST] + [g.layer for g in groups[(c.model, c.dataset)]]))
            if ctx.layers != [LAST]:
                ctx.layer_index = cell_layers(models[c.model], datas[c.dataset], dsets.settings, tables,
                                              dsets.path)[1]
            contexts[(c.model, c.dataset)] = ctx
        return contexts[(c.model, c.dataset)]

    def claim_and_run(c, cfg, h, path, force) -> bool:
        """False when another live run holds the cell's claim."""
        lock = CellLock(path)
        if not lock.acquire():
            return False
        try:
            if not force and valid(c, path, h):  # finished by another run while we were busy
                summary.skipped += 1
                return True
            run_one(context(c), c, cfg, h, path, hps[c.protocol], opts, summary, log)
        finally:
            lock.release()
        return True

    def valid(c, path, h) -> bool:
        """A finished record of this config, computed under the protocol defaults the code has now (a record
        made under a default changed since is recomputed, said in one line)."""
        rec = read_record(path)  # read once for both checks: this runs for every cell of a resumed grid
        if not rec or not is_done(path, h, rec):
            return False
        changed = P.changed_defaults(rec, c.protocol, hps[c.protocol])
        if changed:
            log(f"[stale] {_label(c)}: computed under older defaults ({'; '.join(changed)}); recomputing")
        return not changed

    busy = []
    for (model_name, data_name), group in mine:
        for c in group:
            check_stop()  # a stop signal whose exception CPython dropped (see stopping.py)
            cfg = cell_config(zoo, dsets, c, identities.get(c.dataset))
            path = record_path(opts.out, c.model, c.dataset, c.protocol, c.seed, c.layer)
            h = stable_hash(cfg)
            if not opts.force and valid(c, path, h):
                summary.skipped += 1
                tidy_finished_cell(path)  # a claim or checkpoint folder a kill left on a finished cell
            elif not claim_and_run(c, cfg, h, path, opts.force):
                owner = CellLock(path).owner() or {}
                busy.append((c, cfg, h, path))
                log(f"[busy]  {_label(c)}: claimed by "
                    f"{owner.get('host', '?')}:{owner.get('pid', '?')}")
    # Cells another run held: look again before exiting, and take over those whose owner has died since.
    for c, cfg, h, path in busy:
        if valid(c, path, h):
            summary.skipped += 1
        elif claim_and_run(c, cfg, h, path, force=False):
            log(f"        took over {_label(c)} from a run that ended")
        else:
            summary.busy.append(c)
    return summary


def run_one(ctx, c: Cell, cfg: dict, h: str, path: Path, hp: dict, opts, summary, log) -> None:
    """Compute one claimed cell and write its record (ok or error)."""
    seed_everything(cell_seed(c.seed, c.model, c.dataset, c.protocol))
    ctx.costs = new_costs()
    t0 = time.perf_counter()
    record = {"model": c.model, "dataset": c.dataset, "protocol": c.protocol, "seed": c.seed, "layer": c.layer,
              "config": cfg, "config_hash": h, "defaults": P.defaults_of(c.protocol)}
    try:
        metrics, chosen, extra = run_cell(ctx, c, hp, h, path)
        check_finite(c, metrics, ctx.memo.get(("feature_health", "train", c.layer)))
        record.update(status=STATUS_OK, metrics=metrics, hyperparameters=chosen, **extra)
        if ctx._loaded is not None and not isinstance(ctx._loaded, str):  # loaded here (features may be cached)
            record.update(model_identity=ctx._loaded.identity, model_notes=ctx._loaded.notes)
        elif ctx.model_info is not None:  # every feature came from cache: the identity stored beside them
            record.update(ctx.model_info)
        summary.ok += 1
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        log(f"[ok]    {_label(c)}: {shown}")
        for w in record.get("warnings", []):
            log(f"        warning: {w}")
    except (KeyboardInterrupt, DiskFull):  # the run stops: no error record (a full disk could not write it)
        raise
    except NotApplicable as e:  # a final state of its own, not an error: never retried
        record.update(status=STATUS_NA, reason=str(e))
        summary.not_applicable += 1
        log(f"[n/a]   {_label(c)}: {e}")
    except Exception as e:  # noqa: BLE001 - a failing cell becomes an error record; the grid goes on
        msg = _one_line(e)
        record.update(status=STATUS_ERROR, error=msg, traceback=traceback.format_exc(limit=8))
        summary.errors.append((c, msg))
        log(f"[error] {_label(c)}: {msg}")
    wall = time.perf_counter() - t0
    if P.kind_of(c.protocol) == "proxy" and ("feature_health", "train", c.layer) in ctx.memo:  # ok and errors
        record["feature_health"] = ctx.memo[("feature_health", "train", c.layer)]
    images = record.pop("images_processed", 0)
    # device_s: seconds this cell held its one device (extraction or decoding it happened to do included).
    # Features are shared by the cells of a group, so which cell pays for them depends on order; standalone_s
    # is the order-free cost: the cell's own work plus the extraction of every feature split it read.
    k = ctx.costs
    record["cost"] = {"wall_s": round(wall, 4), "device_s": round(wall, 4), "devices": 1,
                      "images": images or k["features_images"],
                      "standalone_s": round(wall - k["extracted_s"] - k["decode_s"] + k["features_s"], 4),
                      **{n: round(v, 4) if isinstance(v, float) else v for n, v in k.items()}}
    record["provenance"] = provenance(opts.device, wall)
    write_record(path, record)
    if record["status"] == STATUS_OK:  # only now: a kill before the record is on disk keeps the finished training
        shutil.rmtree(path.with_suffix(".ckpt"), ignore_errors=True)
