"""Layers as a coordinate of the grid: which layers a (model, dataset) pair's proxy cells run on, the layer table
each model exposes (cached on disk, so a planner never loads a model twice), and the feature-cache key of a layer.

The layer table depends on the architecture only, so it is read from a randomly initialised twin (no download,
no checkpoint read) and stored under the cache root by the model's identity and the dataset's resolution.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .atomic import write_text
from .config import stable_hash
from .layers import LAST, LayerInfo, available_layers, resolve_layers

DEFAULT = [LAST]


def layer_spec(data_entry, settings):
    """The dataset's `layers:` if given, else settings.layers."""
    return data_entry.layers if data_entry.layers is not None else settings.layers


def needs_table(spec) -> bool:
    """True unless the spec names only 'last' (today's behaviour: no model is built to plan it)."""
    return spec != DEFAULT


def build_table(model_entry, resolution: int | None = None) -> list[LayerInfo]:
    """The layer table of a zoo entry's architecture, from its random twin."""
    from .models import load_model
    twin = dataclasses.replace(model_entry, pretrained=False, init_seed=model_entry.init_seed or 0)
    loaded = load_model(twin, resolution)
    size = resolution or loaded.data_config["input_size"][-1]
    return available_layers(loaded.module, size)


class LayerTables:
    """model entry x resolution -> layer table, memoised in memory and in `<cache>/layers/`."""

    def __init__(self, root, identity):
        self.root, self.identity, self._memo = Path(root) / "layers", identity, {}

    def get(self, model_entry, resolution) -> list[LayerInfo]:
        key = stable_hash({"model": self.identity(model_entry), "resolution": resolution}, 32)
        if key not in self._memo:
            path = self.root / f"{key}.json"
            try:
                table = [LayerInfo(*row) for row in json.loads(path.read_text())]
            except (OSError, ValueError, TypeError):
                table = build_table(model_entry, resolution)
                write_text(path, json.dumps([[t.name, t.index, t.dim] for t in table]))
            self._memo[key] = table
        return self._memo[key]


def cell_layers(model_entry, data_entry, settings, tables: LayerTables, where: str) -> tuple[list[str], dict]:
    """(layer names a proxy cell of this pair runs on, shallow to deep; {name: depth index}). 'last' only by
    default, without building the model; depth indices then stay unknown (empty)."""
    spec = layer_spec(data_entry, settings)
    if not needs_table(spec):
        return [LAST], {}
    table = tables.get(model_entry, data_entry.resolution)
    names = resolve_layers(spec, table, f"{where}: dataset '{data_entry.name}' layers (model '{model_entry.name}')")
    return names, {t.name: t.index for t in table}


def layer_key(key: dict, layer: str, token_pool: str) -> dict:
    """A layer's feature-cache key: 'last' keeps the key features have always had (old caches stay valid)."""
    return key if layer == LAST else {**key, "layer": layer, "token_pool": token_pool}
