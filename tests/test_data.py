import numpy as np
import pytest
from PIL import Image

from benchmark.config import DatasetEntry
from benchmark.data import few_shot, load_source, plan_splits, stratified_carve
from benchmark.data.sources import FASHION_MNIST_DIR
from benchmark.errors import CellError, ConfigError


def test_stratified_carve_is_deterministic_disjoint_and_proportional():
    labels = np.repeat(np.arange(4), [10, 20, 40, 3])
    keep, carved = stratified_carve(labels, 0.25, seed=5)
    assert not set(keep) & set(carved) and len(keep) + len(carved) == len(labels)
    assert [int((labels[carved] == c).sum()) for c in range(4)] == [2, 5, 10, 1]
    k2, c2 = stratified_carve(labels, 0.25, seed=5)
    assert np.array_equal(carved, c2)
    assert not np.array_equal(carved, stratified_carve(labels, 0.25, seed=6)[1])


def test_plan_splits_caps_and_few_shot():
    e = DatasetEntry(name="m", packaged="mnist5k", max_train_per_class=30, max_test_per_class=10)
    src = load_source(e)
    plan = plan_splits(e, src)
    y = src.splits["train"].labels
    sets = {k: set(v[1]) for k, v in plan.items()}
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"]
    assert np.bincount(y[plan["test"][1]]).tolist() == [10] * 10
    assert np.all(np.bincount(y[np.r_[plan["train"][1], plan["val"][1]]]) == 30)
    tr = y[plan["train"][1]]
    a, b = few_shot(tr, 5, seed=0), few_shot(tr, 5, seed=1)
    assert np.bincount(tr[a]).tolist() == [5] * 10 and not np.array_equal(a, b)
    with pytest.raises(CellError, match="fewer than shots=50"):
        few_shot(tr, 50, seed=0)


@pytest.mark.parametrize("name,n_classes,n", [("mnist5k", 10, 5000), ("digits", 10, 1797),
                                              ("textures", 3, 192), ("lfw_faces", 2, 200)])
def test_packaged_datasets(name, n_classes, n):
    src = load_source(DatasetEntry(name=name, packaged=name))
    assert len(src.classes) == n_classes and len(src.splits["train"].labels) == n
    img, label = src.splits["train"].data[0]
    assert isinstance(img, Image.Image) and 0 <= label < n_classes


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_files():
    src = load_source(DatasetEntry(name="f", packaged="fashion_mnist"))
    assert len(src.splits["train"].labels) == 60000 and len(src.splits["test"].labels) == 10000
    assert src.splits["train"].data[0][0].size == (28, 28)


def test_folder_dataset_and_class_mismatch(tmp_path):
    for split, classes in (("train", ["cat", "dog"]), ("test", ["cat", "dog"])):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / split / c / f"{i}.png")
    src = load_source(DatasetEntry(name="f", folder=str(tmp_path)))
    assert src.classes == ["cat", "dog"] and len(src.splits["test"].labels) == 6
    (tmp_path / "val" / "bird").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "bird" / "0.png")
    with pytest.raises(ConfigError, match="differ"):
        load_source(DatasetEntry(name="f", folder=str(tmp_path)))
    with pytest.raises(ConfigError, match="no train/"):
        load_source(DatasetEntry(name="f", folder=str(tmp_path / "nothing")))


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_torchvision_source_with_official_splits(tmp_path):
    """torchvision's own FashionMNIST class, fed the Debian files in torchvision's folder layout."""
    import gzip
    import shutil
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in FASHION_MNIST_DIR.glob("*.gz"):
        with gzip.open(f) as src, open(raw / f.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    e = DatasetEntry(name="fm", torchvision="FashionMNIST", root=str(tmp_path), max_test_per_class=5)
    src = load_source(e)
    assert set(src.splits) == {"train", "test"} and src.classes[0] == "T-shirt/top"
    plan = plan_splits(e, src)
    assert len(plan["test"][1]) == 50 and len(plan["val"][1]) == 12000  # val carved: 20 % of 60k, stratified
    with pytest.raises(ConfigError, match="set 'download: true'"):
        load_source(DatasetEntry(name="c", torchvision="CIFAR10", root=str(tmp_path)))
