"""Names are identifiers, never paths: checked when the files load (test_config.py) and, as a second line, where
a name becomes a path (records, report files, `bench rank`'s folder-derived dataset name)."""
import numpy as np
import pytest
from PIL import Image

from benchmark.cli import main
from benchmark.errors import ConfigError
from benchmark.paths import safe_file_name, under
from benchmark.records import record_path

ESCAPES = ["/tmp/x/ABS_MODEL", "../escaped_model", "../escaped_ds", "a/b", ".", "..", "", "a\\b"]


@pytest.mark.parametrize("name", ESCAPES)
def test_record_path_refuses_a_model_or_dataset_name_that_is_a_path(tmp_path, name):
    out = tmp_path / "out"
    for args in ((name, "d"), ("m", name)):
        with pytest.raises(ConfigError, match="not a path"):
            record_path(out, *args, "knn", 0)
    assert record_path(out, "m.v2+ft", "d-1", "knn", 3) == out / "d-1" / "m.v2+ft" / "knn__seed3.json"


@pytest.mark.parametrize("part", ["../x", "/etc/passwd", ".", "..", "a/b", ""])
def test_under_keeps_every_path_inside_its_root(tmp_path, part):
    with pytest.raises(ConfigError, match="rename it"):
        under(tmp_path, part, what="figure")
    assert under(tmp_path, "rank_d.csv") == tmp_path / "rank_d.csv"
    name = f"transfer_cka_{safe_file_name(part)}_finetune.png"  # how report figures name record fields
    assert under(tmp_path, name).parent == tmp_path


def _image_folder(root):
    for split, n in (("train", 4), ("test", 2)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(root / split / c / f"{i}.png")
    return root


def test_rank_refuses_a_folder_whose_name_is_not_an_identifier(tmp_path, capsys):
    folder = _image_folder(tmp_path / "my domain")
    (tmp_path / "zoo.yaml").write_text("models:\n  - {name: a, timm: resnet18, pretrained: false}\n")
    code = main(["rank", "--zoo", str(tmp_path / "zoo.yaml"), "--dataset", str(folder),
                 "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--dataset folder" in err and "'my domain'" in err and "'my_domain'" in err
    assert not list((tmp_path / "r").rglob("*.json"))
