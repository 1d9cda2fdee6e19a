import pandas as pd

from benchmark.cli import main
from benchmark.config import DatasetEntry
from benchmark.data import load_source


def texture_folder(root):
    """A user's own domain as an ImageFolder: the scikit-image texture patches written to disk."""
    src = load_source(DatasetEntry(name="t", packaged="textures"))
    split = src.splits["train"]
    for i in range(len(split.labels)):
        img, label = split.data[i]
        sub = "test" if i % 4 == 0 else "train"
        folder = root / sub / src.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{i}.png")
    return root


def test_rank_a_zoo_on_a_new_folder_domain(tmp_path, capsys):
    folder = texture_folder(tmp_path / "my_domain")
    (tmp_path / "zoo.yaml").write_text("models:\n  - {name: mnv2, package: mobilenetv2_100}\n"
                                       "  - {name: mnv2_random, package: mobilenetv2_100, pretrained: false}\n")
    args = ["rank", "--zoo", str(tmp_path / "zoo.yaml"), "--dataset", str(folder), "--proxy", "linear,nc1",
            "--resolution", "32", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "rep")]
    assert main(args) == 0
    table = pd.read_csv(tmp_path / "rep" / "rank_my_domain.csv")
    assert list(table["rank"]) == [1, 2] and list(table.columns[:4]) == ["rank", "model", "linear.top1", "nc1.nc1"]
    assert table["linear.top1"].is_monotonic_decreasing
    assert table.model.iloc[0] == "mnv2"  # ImageNet weights beat random init on real textures
    out = capsys.readouterr().out
    assert "Ranking of 2 models on 'my_domain' by linear.top1" in out and "4 cells computed, 0 reused" in out
    assert main(args) == 0  # the second call reuses every record
    assert "0 cells computed, 4 reused" in capsys.readouterr().out
    assert main(args + ["--proxy", "knnn"]) == 2
    assert "Did you mean knn" in capsys.readouterr().err
