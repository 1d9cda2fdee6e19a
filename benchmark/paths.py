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
