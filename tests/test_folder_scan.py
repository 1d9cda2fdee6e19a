"""`folder:` datasets are listed without following links that loop or leave the dataset, each image once
(audit: `train/class0/loop -> ..` turned 24 images into 1,464 samples with train/test duplicates, top-1 99.2)."""
import os

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import ImageFolder

from benchmark.cli import main
from benchmark.config import DatasetEntry
from benchmark.data import load_source
from benchmark.errors import ConfigError


def image_folder(root, classes=("class0", "class1", "class2"), counts=(("train", 4), ("test", 2))):
    for split, n in counts:
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / split / c / f"{i}.png")
    return root


def source(root):
    return load_source(DatasetEntry(name="t", folder=str(root)))


def test_a_link_looping_back_up_is_skipped_counted_and_reported(tmp_path, capsys):
    root = image_folder(tmp_path / "ds")
    plain = source(root)
    os.symlink("..", root / "train" / "class0" / "loop")
    os.symlink("../..", root / "test" / "class1" / "to_root")
    src = source(root)
    assert {k: len(v.labels) for k, v in src.splits.items()} == {"train": 12, "test": 6}
    assert [p for p, _ in src.splits["train"].data.samples] == [p for p, _ in plain.splits["train"].data.samples]
    assert src.identity["skipped_links"] == 2 and src.identity["files"] == plain.identity["files"]
    err = capsys.readouterr().err
    assert "dataset 't': 2 symbolic link(s) not followed" in err and "class0/loop (loops back" in err


def test_links_inside_the_dataset_are_followed_and_links_out_of_it_are_not(tmp_path, capsys):
    root = image_folder(tmp_path / "ds")
    outside = image_folder(tmp_path / "elsewhere", classes=("class0",), counts=(("train", 3),))
    os.symlink(outside / "train" / "class0", root / "train" / "class0" / "out_dir")
    os.symlink(outside / "train" / "class0" / "0.png", root / "train" / "class1" / "out.png")
    extra = image_folder(root / "extra", classes=("class2",), counts=(("more", 2),))  # inside the root
    os.symlink(extra / "more" / "class2", root / "train" / "class2" / "more")
    src = source(root)
    samples = [p for p, _ in src.splits["train"].data.samples]
    assert len(samples) == 14 and sum("/more/" in p for p in samples) == 2 and not any("out" in p for p in samples)
    assert src.identity["skipped_links"] == 2 and "points outside the dataset" in capsys.readouterr().err


@pytest.mark.parametrize("link,target", [
    ("train/class1/dup.png", "../../test/class1/0.png"),  # a test image also in train
    ("train/class3", "class0"),  # a class folder listed twice
    ("test/class2/again.png", "0.png")])  # twice in one split
def test_the_same_file_twice_is_a_config_error_naming_both(tmp_path, link, target):
    root = image_folder(tmp_path / "ds")
    if link == "train/class3":
        (root / "test" / "class3").mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "test" / "class3" / "x.png")
    os.symlink(target, root / link)
    with pytest.raises(ConfigError, match="is the same file as") as e:
        source(root)
    assert str(root) in str(e.value) and "remove one of them" in str(e.value)


def test_plain_folders_list_exactly_as_torchvision_imagefolder(tmp_path):
    root = image_folder(tmp_path / "ds", classes=("b", "a", "c_1"))
    (root / "train" / "a" / "nested" / "deeper").mkdir(parents=True)
    for name in ("z.png", "A.JPG", "m.jpeg", "notes.txt"):
        target = root / "train" / "a" / "nested" / name
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(target, format="PNG") if name != "notes.txt" \
            else target.write_text("x")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "a" / "nested" / "deeper" / "0.png")
    ours, theirs = source(root).splits["train"].data, ImageFolder(str(root / "train"))
    assert ours.classes == theirs.classes and ours.samples == theirs.samples and ours.targets == theirs.targets
    img, label = ours[0]
    assert img.size == (8, 8) and label == 0


def test_an_empty_class_folder_is_a_config_error_naming_it(tmp_path, capsys):
    root = image_folder(tmp_path / "my_domain")
    (root / "test" / "class_9").mkdir()
    (root / "train" / "class_9").mkdir()
    with pytest.raises(ConfigError, match=r"class folder .*class_9 has no images"):
        source(root)
    (tmp_path / "zoo.yaml").write_text("models:\n  - {name: a, timm: resnet18, pretrained: false}\n")
    code = main(["rank", "--zoo", str(tmp_path / "zoo.yaml"), "--dataset", str(root),
                 "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "bench: error:" in err
    assert f"{root / 'test' / 'class_9'}" in err or f"{root / 'train' / 'class_9'}" in err


def test_validate_and_run_stop_on_an_empty_class_folder_or_a_repeated_file_before_any_work(tmp_path, capsys):
    root = image_folder(tmp_path / "ds")
    (tmp_path / "zoo.yaml").write_text("models:\n  - {name: a, timm: resnet18, pretrained: false}\n")
    (tmp_path / "d.yaml").write_text(f"settings: {{protocols: [knn], target: knn}}\n"
                                     f"datasets:\n  - {{name: ds, folder: {root}}}\n")
    cfg = ["--zoo", str(tmp_path / "zoo.yaml"), "--datasets", str(tmp_path / "d.yaml")]
    os.symlink("../../test/class1/0.png", root / "train" / "class1" / "dup.png")
    for argv in (["validate"], ["run", "--out", str(tmp_path / "r")]):
        assert main(argv + cfg) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "dataset 'ds'" in err and "is the same file as" in err
    (root / "train" / "class1" / "dup.png").unlink()
    (root / "train" / "class9").mkdir()
    assert main(["validate"] + cfg) == 2
    assert f"class folder {root / 'train' / 'class9'} has no images" in capsys.readouterr().err
    assert not list((tmp_path / "r").rglob("*.json"))
