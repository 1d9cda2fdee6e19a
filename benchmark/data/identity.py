"""What determines a dataset's images, for cache keys and record hashes: a file-list fingerprint.

Every file's relative path, size and modification time (ns) are hashed, so replacing images under the same names
invalidates features, pixels and records. We stat every file on each run instead of trusting directory mtimes:
overwriting a file in place does not change its directory's mtime, and stat costs ~5 µs a file (0.5 s for
100,000 images), small next to decoding them.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def files_fingerprint(root: str | os.PathLike, files=None) -> dict:
    """{'files': count, 'digest': sha256 over (relpath, size, mtime_ns)} of `files` (default: all under root)."""
    root = Path(root)
    if files is None:
        files = [Path(d) / f for d, _, names in os.walk(root) for f in names]
    h = hashlib.sha256()
    n = 0
    for p in sorted(str(f) for f in files):
        try:
            st = os.stat(p)
        except FileNotFoundError:
            continue
        rel = os.path.relpath(p, root)
        h.update(f"{rel}\x1f{st.st_size}\x1f{st.st_mtime_ns}\n".encode())
        n += 1
    return {"files": n, "digest": h.hexdigest()[:24]}
