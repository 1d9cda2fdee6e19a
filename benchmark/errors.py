"""Error types that decide how the CLI reports a failure (exit 2 for configs, error records for cells)."""
from __future__ import annotations

import difflib


class ConfigError(Exception):
    """Bad user input: the CLI prints the one-line message and exits with code 2."""


class CellError(Exception):
    """A failure inside one (model, dataset, protocol, seed) cell: becomes an error record."""


class NotApplicable(CellError):
    """The cell cannot exist for this model (e.g. LEEP without a source classifier): a `not_applicable`
    record with the reason, done for good (never retried), listed by the report."""


def unknown_name(kind: str, name: str, valid, where: str = "") -> ConfigError:
    valid = sorted(valid)
    close = difflib.get_close_matches(str(name), valid, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    prefix = f"{where}: " if where else ""
    return ConfigError(f"{prefix}unknown {kind} '{name}'.{hint} Valid: {', '.join(valid)}")


class DiskFull(Exception):
    """A write hit ENOSPC/EDQUOT: the run stops with one line naming the folder (every later write would fail)."""
