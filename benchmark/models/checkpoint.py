"""`checkpoint:` source: a weights file as its authors publish it, fitted to a timm architecture.

The entry's rules run in a fixed order: the branch (`state_dict_key`, a dotted path, or auto-detected with the
teacher first), `keep_prefix` (select, then strip), `strip_prefix`, `rename`, `drop`; then the position embeddings
are fitted to the architecture's grid (posembed.py); then one strict load that names every missing, unexpected
or misshapen key. The file is read without running code from it (safe_load.py).
"""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from ..config import ModelEntry
from ..errors import CellError, ConfigError
from . import offline
from .posembed import fit_pos_embed
from .remap import branch_note, extract_state_dict, load_strict, mismatch, remap_keys
from .safe_load import load_checkpoint_file, load_note
from .sources import MODEL_SOURCES, LoadedModel, _check_timm_name, _timm_data_config, size_kwargs


def _file_identity(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime": int(st.st_mtime)}


def locate(entry: ModelEntry, download: bool = True) -> tuple[Path | None, dict]:
    """Local path of the entry's file (downloading a URL once into torch.hub's cache) and its identity.
    With download=False an uncached URL gives (None, ...)."""
    src = entry.checkpoint
    if "://" in src:
        path = offline.torch_hub_checkpoint(src)
        if not path.exists():
            if not download:
                return None, {"url": src}
            offline.require_download(src, entry.name, "download the file and set 'checkpoint:' to its local path")
            torch.hub.download_url_to_file(src, str(path), progress=False)
        return path, {"url": src}
    path = Path(src).expanduser()
    if not path.is_file():
        raise ConfigError(f"model '{entry.name}': checkpoint file '{src}' not found; fix the path")
    return path, _file_identity(path)


def fit_state_dict(entry: ModelEntry, obj, module: nn.Module) -> tuple[dict, list[str], str | None]:
    """Apply the entry's rules to a loaded file: (state dict for `module`, notes, key path used)."""
    sd, used = extract_state_dict(obj, entry.state_dict_key, entry.name)
    sd = remap_keys(sd, entry.strip_prefix, entry.rename, entry.drop, entry.keep_prefix)
    notes = [n for n in [branch_note(used, entry.keep_prefix)] if n]
    notes += fit_pos_embed(sd, module)
    return sd, notes, used


def build_arch(entry: ModelEntry, resolution: int | None = None) -> nn.Module:
    return timm.create_model(entry.arch, pretrained=False, num_classes=0,
                             **size_kwargs(entry.arch, resolution, entry.timm_kwargs))


@MODEL_SOURCES.register("checkpoint")
def checkpoint_source(entry: ModelEntry, resolution: int | None = None) -> LoadedModel:
    _check_timm_name(entry.arch, False, entry.name)
    path, ident = locate(entry)
    module = build_arch(entry, resolution)
    identity = {"source": "checkpoint", "arch": entry.arch, "pretrained": entry.pretrained, **ident,
                "state_dict_key": entry.state_dict_key, "keep_prefix": entry.keep_prefix,
                "strip_prefix": entry.strip_prefix, "rename": entry.rename, "drop": entry.drop,
                "timm_kwargs": entry.timm_kwargs}
    notes = []
    if entry.pretrained:  # a random twin never reads the file
        obj, how = load_checkpoint_file(path, entry.trust_pickle, entry.name, max_gb=entry.max_checkpoint_gb)
        sd, notes, used = fit_state_dict(entry, obj, module)
        load_strict(module, sd, entry.name)
        identity.update(unpickle=how["unpickle"], state_dict_key_used=used)
        if how.get("stubbed"):
            identity["stubbed_globals"] = how["stubbed"]
        notes = [n for n in [load_note(how)] if n] + notes
    return LoadedModel(module, _timm_data_config(module), identity, notes)


def key_problem(entry: ModelEntry) -> str | None:
    """Why the entry's (local or cached) file would not load into its arch, or None; builds no features and runs
    nothing from the file, even under `trust_pickle: true` (`bench validate` is a static check: the file is read
    with the restricted unpickler, whose stubs keep the structure). The arch is built on the meta device: only key
    names and shapes are compared."""
    if not entry.pretrained:
        return None
    path, _ = locate(entry, download=False)
    if path is None:
        return None
    try:
        obj, _ = load_checkpoint_file(path, False, entry.name, max_gb=entry.max_checkpoint_gb)
        with torch.device("meta"):
            module = build_arch(entry)
        sd, _, _ = fit_state_dict(entry, obj, module)
    except CellError as e:
        return str(e)
    problem = mismatch(module.state_dict(), sd)
    return (f"model '{entry.name}': {path.name} would not load into {entry.arch}: {problem}; "
            f"fix keep_prefix/strip_prefix/rename/drop") if problem else None
