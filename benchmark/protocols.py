"""What a cell's protocol name means: a frozen-feature proxy, or a training protocol of the engine.

The runner asks this module for a protocol's default and allowed hyperparameters; both kinds share it.
"""
from __future__ import annotations

import inspect

from .errors import ConfigError, unknown_name
from .proxies import PROXIES


def training_protocols():
    try:
        from .training.protocols import PROTOCOLS
    except ImportError:  # the training engine is optional at import time for pure-proxy use
        return None
    return PROTOCOLS


def all_protocol_names() -> list[str]:
    names = list(PROXIES.names())
    train = training_protocols()
    if train is not None:
        names += train.names()
    return sorted(names)


def kind_of(name: str, where: str = "") -> str:
    if name in PROXIES:
        return "proxy"
    train = training_protocols()
    if train is not None and name in train:
        return "train"
    raise unknown_name("protocol", name, all_protocol_names(), where)


def proxy_hp_names(name: str) -> set[str]:
    sig = inspect.signature(PROXIES.get(name).fn)
    # data the runner passes, not hyperparameters a config may set
    return {p.name for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY} - {"val_x", "val_y", "source_probs"}


def check_hp(name: str, hp: dict, where: str) -> None:
    if kind_of(name, where) == "proxy":
        allowed = proxy_hp_names(name)
    else:
        allowed = training_protocols().get(name).hp_names()
    if not isinstance(hp, dict):
        raise ConfigError(f"{where}: hyperparameters of '{name}' must be a mapping")
    for key in hp:
        if key not in allowed:
            raise unknown_name(f"hyperparameter of '{name}'", key, allowed, where)
