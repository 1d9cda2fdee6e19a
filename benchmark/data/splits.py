"""Deterministic, seeded, stratified index sets: validation/test carves, per-class caps, few-shot draws."""
from __future__ import annotations

import numpy as np

from ..config import DatasetEntry
from ..errors import CellError, ConfigError
from .sources import SourceData

TEST_FRACTION = 0.25  # share carved as test for sources without an official test split


def stratified_carve(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split positions 0..N-1 into (keep, carved), taking round(fraction * n_c) of each class (at least one
    when the class has two or more samples, so every class appears on both sides)."""
    rng = np.random.default_rng(seed)
    keep, carved = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            n = min(max(n, 1), len(idx) - 1)
        else:
            n = 0
        carved.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(carved))


def cap_per_class(labels: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    if cap is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    parts = [rng.permutation(np.flatnonzero(labels == c))[:cap] for c in np.unique(labels)]
    return np.sort(np.concatenate(parts))


def few_shot(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Positions of `shots` examples per class, drawn with the cell's seed."""
    rng = np.random.default_rng(10_000 + seed)
    parts = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < shots:
            raise CellError(f"few-shot: class {c} has {len(idx)} training images, fewer than shots={shots}")
        parts.append(rng.choice(idx, size=shots, replace=False))
    return np.sort(np.concatenate(parts))


def plan_splits(entry: DatasetEntry, src: SourceData) -> dict:
    """Return {'train'|'val'|'test': (official split name, indices into it)}."""
    seed = entry.split_seed
    train_labels = src.splits["train"].labels
    plan = {}
    # The test carve comes first, from everything, so that budget caps on train never shrink the test set.
    if "test" in src.splits:
        plan["test"] = ("test", cap_per_class(src.splits["test"].labels, entry.max_test_per_class, seed))
        base = np.arange(len(train_labels))
    else:
        base, carved = stratified_carve(train_labels, TEST_FRACTION, seed + 1)
        plan["test"] = ("train", carved[cap_per_class(train_labels[carved], entry.max_test_per_class, seed)])
    pool = base[cap_per_class(train_labels[base], entry.max_train_per_class, seed)]
    if "val" in src.splits:
        plan["val"] = ("val", cap_per_class(src.splits["val"].labels, entry.max_train_per_class, seed))
        plan["train"] = ("train", pool)
    else:
        keep, carved = stratified_carve(train_labels[pool], entry.val_fraction, seed)
        plan["train"], plan["val"] = ("train", pool[keep]), ("train", pool[carved])
    _require_every_class(entry, src, plan, pool)
    return plan


def _require_every_class(entry: DatasetEntry, src: SourceData, plan: dict, pool: np.ndarray) -> None:
    """Fail, naming the class and the fix, where a carve would lose a class from validation or test.

    Decision: a class too small to appear in every split we carve is an error, not silently train-only. A class
    missing from test is never scored, one missing from validation never steers the sweep, and with two classes
    the test set becomes one class and every accuracy is trivially "ok". Official splits are used as given,
    except that a test split must hold at least two classes.
    """
    labels = src.splits["train"].labels
    names = src.classes
    where = f"dataset '{entry.name}'"

    def name(c):
        return f"'{names[c]}'" if c < len(names) else str(c)
    present = np.unique(labels)
    if len(present) < 2:
        raise ConfigError(f"{where}: its training split has {len(present)} class(es) "
                          f"({', '.join(name(c) for c in present)}); ranking needs at least two classes")
    for split in ("test", "val"):
        official, idx = plan[split]
        if official != "train":  # an official split, used as given
            if split == "test" and len(np.unique(src.splits[official].labels[idx])) < 2:
                raise ConfigError(f"{where}: its test split has fewer than two classes; accuracy on it means nothing")
            continue
        lost = np.setdiff1d(np.unique(labels[pool if split == "val" else np.arange(len(labels))]),
                            labels[idx])
        if len(lost):
            c = int(lost[0])
            n = int((labels[pool] == c).sum()) if split == "val" else int((labels == c).sum())
            if split == "val" and entry.max_train_per_class == 1:
                fix = "raise max_train_per_class to at least 2"
            else:
                fix = "add images to it, provide val/ and test/ splits, or remove the class"
            carved = ("a test split (25 %) and a validation split" if "test" not in src.splits
                      else "a validation split")
            raise ConfigError(f"{where}: class {name(c)} has {n} training image(s) left for the {split} carve "
                              f"({len(lost)} class(es) like it); carving {carved} needs at least "
                              f"{3 if 'test' not in src.splits else 2} per class: {fix}")
