"""What a cell's protocol name means: a frozen-feature proxy, or a training protocol of the engine.

The runner asks this module for a protocol's default and allowed hyperparameters; both kinds share it.
"""
from __future__ import annotations

import inspect
from typing import Callable

from .checks import inferred, swept
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


def proxy_hp_defaults(name: str) -> dict:
    sig = inspect.signature(PROXIES.get(name).fn)
    return {k: sig.parameters[k].default for k in proxy_hp_names(name)}


def hp_rules(name: str) -> dict:
    """hyperparameter -> Rule for a value as the YAML gives it: the declared range (a training protocol's also
    accepts a sweep list of such values), else a type rule inferred from the default (flags, names)."""
    if kind_of(name) == "proxy":
        declared, defaults = PROXIES.get(name).ranges, proxy_hp_defaults(name)
        return {k: declared.get(k) or inferred(d) for k, d in defaults.items()}
    proto = training_protocols().get(name)
    rules = {k: proto.ranges.get(k) or inferred(d) for k, d in proto.defaults.items()}
    return {k: (swept(r) if r is not None else None) for k, r in rules.items()}


def check_hp(name: str, hp: dict, where: str, key_where: Callable[[str], str] | None = None) -> None:
    """Unknown keys and out-of-range values -> ConfigError; key_where(key) locates one key (file:line)."""
    if kind_of(name, where) == "proxy":
        allowed = proxy_hp_names(name)
    else:
        allowed = training_protocols().get(name).hp_names()
    if not isinstance(hp, dict):
        raise ConfigError(f"{where}: hyperparameters of '{name}' must be a mapping")
    for key in hp:
        if key not in allowed:
            raise unknown_name(f"hyperparameter of '{name}'", key, allowed, where)
    rules = hp_rules(name)
    for key, value in hp.items():
        problem = rules[key].problem(value) if rules.get(key) is not None else None
        if problem:
            raise ConfigError(f"{(key_where or (lambda k: where))(key)}: {key} {problem}")
    staged = getattr(training_protocols().get(name), "staged", ()) if kind_of(name) == "train" else ()
    lists = [k for k, v in hp.items() if isinstance(v, list) and k not in staged]
    if staged and lists:
        raise ConfigError(f"{where}: {name} sweeps {' then '.join(staged)} one after the other; give "
                          f"{', '.join(lists)} a single value")
    if "diagnostics" in hp:
        from .training.transfer import check_names
        check_names(hp["diagnostics"], f"{where}.diagnostics")


def defaults_of(name: str) -> dict:
    """Every hyperparameter's default for a protocol, as the code has it now (JSON-normalised, so it compares
    with the copy a record keeps)."""
    import json
    raw = proxy_hp_defaults(name) if kind_of(name) == "proxy" else dict(training_protocols().get(name).defaults)
    return json.loads(json.dumps(raw, sort_keys=True, default=str))


def changed_defaults(record: dict, name: str, user_hp: dict) -> list[str]:
    """'key: old -> new' for each default the record was computed under that the code has changed since, for the
    hyperparameters the config leaves unset (those it sets are in the config hash). Records made before defaults
    were kept compare as unchanged: they cannot tell."""
    old = record.get("defaults")
    if not isinstance(old, dict):
        return []
    now = defaults_of(name)
    return [f"{k}: {old.get(k, '(absent)')!r} -> {now.get(k, '(absent)')!r}" for k in sorted(set(old) | set(now))
            if k not in user_hp and old.get(k, "(absent)") != now.get(k, "(absent)")]

