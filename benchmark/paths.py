"""Output folders checked before any work: a run that can't write its records must fail in its first second,
not after the features were extracted."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError


def writable_dir(path, flag: str) -> Path:
    """Create `path` if needed and prove a file can be written there; ConfigError naming the flag otherwise."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} '{path}' is a file, not a folder; pass a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".bench-write-test.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{flag} '{path}' is not writable ({e.strerror or e}); pass a folder you can write to") \
            from None
    return path


def under(root, *parts: str, what: str = "path") -> Path:
    """root/part/... after checking it stays under root: every part a plain name (no separator, not '.' or
    '..', not absolute) and the normalised path inside the normalised root. Names are checked when the files
    load; this is the second line, for names that come from elsewhere (record fields, folder names, tables)."""
    root = Path(root)
    for part in parts:
        p = str(part)
        if not p or p in (".", "..") or "/" in p or "\\" in p or os.sep in p or "\0" in p:
            raise ConfigError(f"{what} part {p!r} is not a plain name (it would leave {root}); rename it")
    path = root.joinpath(*map(str, parts))
    base = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(os.path.abspath(path))
    if os.path.commonpath([base, full]) != base or full == base:
        raise ConfigError(f"{what} {str(path)!r} resolves outside {root}; rename it")
    return path


def safe_file_name(text: str) -> str:
    """A file-name fragment from free text (a dataset or metric name read from records or a table)."""
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in str(text)).strip(".") or "_"
