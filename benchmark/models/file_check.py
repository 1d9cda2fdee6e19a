"""Is this file a PyTorch checkpoint, and how large does it get once read? Answered from its first bytes and, for
the zip format, the archive's own directory, before torch reads anything.

torch.load on a file it did not write fails with whatever its parser trips on (`IndexError: pop from empty list`,
`EOFError`, `KeyError: 101`, a miniz message); a zip whose entries are compressed ("zip bomb": 1.9 MB on disk)
is expanded in full, 2 GB and more, before any check. Here both end in one line that says what is wrong.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from ..errors import CellError

ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy (pre-1.6) format starts with a protocol-2 pickle of its magic number 0x1950a86a20f9469cfc6c.
LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
GB = 1e9


def check_checkpoint_file(path: Path, max_gb: float, model: str) -> str:
    """'zip' or 'legacy' for a torch.save file at most `max_gb` expanded; CellError with the one-line fix else."""
    path = Path(path)
    where = f"model '{model}': {path}"
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_MAGIC))
    fix = "point 'checkpoint:' at the file torch.save wrote (re-download it if it was cut short)"
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as z:
                entries = z.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise CellError(f"{where} is not a PyTorch checkpoint (a truncated or damaged zip: {e}); {fix}") \
                from None
        if not any(i.filename == "data.pkl" or i.filename.endswith("/data.pkl") for i in entries):
            raise CellError(f"{where} is not a PyTorch checkpoint (a zip without the data.pkl torch.save writes); "
                            f"{fix}")
        expanded = sum(i.file_size for i in entries)  # the sizes the archive declares for its entries
        kind = "zip"
    elif head == LEGACY_MAGIC:
        expanded, kind = size, "legacy"  # stored uncompressed: the file is as large as what is read
    else:
        what = "an empty file" if not size else f"starts with {head[:8]!r}"
        raise CellError(f"{where} is not a PyTorch checkpoint ({what}; torch.save files are zip archives or start "
                        f"with its legacy magic number); {fix}")
    if expanded > max_gb * GB:
        raise CellError(f"{where} expands beyond {max_gb:g} GB ({expanded / GB:.3g} GB declared in a "
                        f"{size / 1e6:.1f} MB file); raise max_checkpoint_gb if you trust it")
    return kind
