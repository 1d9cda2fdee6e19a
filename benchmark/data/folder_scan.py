"""Listing an ImageFolder dataset safely: torchvision's ImageFolder walks with `followlinks=True`, so a link that
points back up (`train/class0/loop -> ..`) multiplies the files (24 real images became 1,464 samples, with the
same files in train and test) and a link out of the dataset pulls in whatever it points at.

Here a symbolic link is followed only when its target lies inside the dataset root (resolved) and, for a folder,
when that folder is not already being listed (no loops); every other link is skipped, counted and reported.
Every image is identified by its resolved path: the same file reached twice (in two splits, or twice in one) is a
config error naming both paths. Sample order is ImageFolder's (folders, then file names, sorted), so cache keys
and splits of existing datasets do not change.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from ..errors import ConfigError


@dataclass
class Scan:
    root: Path  # the dataset root, resolved: nothing outside it is read
    skipped: list = field(default_factory=list)  # (link, why) of every symbolic link not followed
    seen: dict = field(default_factory=dict)  # resolved file (str) -> the path it was first listed under


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _loops(target: Path, active: set) -> bool:
    """A folder that is, or holds, a folder being listed: following it would list that folder again."""
    return any(target == a or target in a.parents for a in active)


def _follow(path: Path, scan: Scan, active: set) -> Path | None:
    """The resolved target of a link when it may be followed, else None (the link is recorded as skipped)."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling, or a cycle of links
        scan.skipped.append((str(path), "dangling or looping link"))
        return None
    if not _inside(target, scan.root):
        scan.skipped.append((str(path), f"points outside the dataset, to {target}"))
        return None
    if target.is_dir() and _loops(target, active):
        scan.skipped.append((str(path), "loops back to a folder above it"))
        return None
    return target


def _walk(folder: Path, real: Path, scan: Scan, active: set, out: list) -> None:
    """(folder, file name, resolved file) of every image under `folder`, whose resolved path is `real`;
    `active` holds the resolved folders being listed (the dataset root and the chain down to `folder`)."""
    active = active | {real}
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        raise ConfigError(f"cannot list {folder} ({e.strerror or e}); fix its permissions") from None
    folder_str, real_str = str(folder), str(real)
    for entry in entries:  # strings for plain files: a Path per file would cost more than the listing itself
        if entry.is_symlink():
            path = Path(entry.path)
            target = _follow(path, scan, active)
            if target is None:
                continue
            if target.is_dir():
                _walk(path, target, scan, active, out)
            elif has_file_allowed_extension(entry.name, IMG_EXTENSIONS):
                out.append((folder_str, entry.name, str(target)))
        elif entry.is_dir(follow_symlinks=False):
            _walk(Path(entry.path), real / entry.name, scan, active, out)
        elif has_file_allowed_extension(entry.name, IMG_EXTENSIONS):
            out.append((folder_str, entry.name, real_str + os.sep + entry.name))  # no link on the way


def list_classes(split_dir: Path, scan: Scan) -> tuple[list, list]:
    """(class names, [(path, class index)]) of one split; empty class folders and repeated files -> ConfigError."""
    split_real = split_dir.resolve()
    active = {scan.root, split_real}
    classes = []
    for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
        path = Path(entry.path)
        if entry.is_symlink():
            target = _follow(path, scan, active)
            if target is not None and target.is_dir():
                classes.append((entry.name, target))
        elif entry.is_dir(follow_symlinks=False):
            classes.append((entry.name, split_real / entry.name))
    if not classes:
        raise ConfigError(f"{split_dir} has no class folders; lay it out as {split_dir}/<class>/*.jpg")
    samples = []
    for index, (name, real) in enumerate(classes):
        found: list = []
        folder = split_dir / name
        _walk(folder, real, scan, active, found)
        if not found:
            raise ConfigError(f"class folder {folder} has no images ({', '.join(IMG_EXTENSIONS[:4])}, ...); add "
                              f"images or remove the folder (every split needs the same class folders)")
        for directory, fname, target in sorted(found):  # ImageFolder's order: sorted walk, then sorted names
            p = directory + os.sep + fname  # os.path.join's result, at a third of its cost
            if target in scan.seen:
                raise ConfigError(f"{p} is the same file as {scan.seen[target]}: an image may appear once in a "
                                  f"dataset (a duplicate across splits leaks test images into training); "
                                  f"remove one of them")
            scan.seen[target] = p
            samples.append((p, index))
    return [name for name, _ in classes], samples


class ScannedImageFolder(ImageFolder):
    """ImageFolder over a list made by `list_classes` (same loader, same sample layout and attributes)."""

    def __init__(self, split_dir: Path, scan: Scan):
        self._listing = list_classes(Path(split_dir), scan)
        super().__init__(str(split_dir))

    def find_classes(self, directory):
        classes = self._listing[0]
        return classes, {c: i for i, c in enumerate(classes)}

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        return list(self._listing[1])


def report_skipped(name: str, scan: Scan) -> None:
    """One warning line per dataset load, naming the first skipped links."""
    if scan.skipped:
        shown = "; ".join(f"{p} ({why})" for p, why in scan.skipped[:3])
        more = f"; and {len(scan.skipped) - 3} more" if len(scan.skipped) > 3 else ""
        print(f"warning: dataset '{name}': {len(scan.skipped)} symbolic link(s) not followed: {shown}{more}",
              file=sys.stderr)


def check_folder(entry) -> Scan:
    """List a `folder:` dataset's splits (no image is opened or stat-ed) so that `bench validate` and `bench run`
    stop on an empty class folder or a repeated file before any work, as config errors."""
    root = Path(entry.folder).expanduser()
    scan = Scan(root.resolve())
    for split in ("train", "val", "test"):
        if (root / split).is_dir():
            try:
                list_classes(root / split, scan)
            except ConfigError as e:
                raise ConfigError(f"dataset '{entry.name}': {e}") from None
    return scan
