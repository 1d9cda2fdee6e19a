"""`bench report --table`: every row of a published table is a finite number once per (model, dataset, metric[,
seed]); flags that size the statistics are range-checked (audit: `nan` silently dropped a model, `inf` computed
through, duplicated rows counted n = 4 for 3 models then crashed, --bootstrap -5 and --wait-timeout -1 accepted)."""
import pandas as pd
import pytest

from benchmark.cli import main

HEADER = "model,dataset,metric,value\n"
GOOD = "".join(f"m{i},d,acc,{50 + 10 * i}\nm{i},d,p,{i * 1.5 + (i == 2)}\n" for i in range(4))


def report(tmp_path, body, *flags, header=HEADER):
    table = tmp_path / "t.csv"
    table.write_text(header + body)
    return main(["report", "--table", str(table), "--target", "acc", "--out", str(tmp_path / "o"),
                 "--no-figures", *flags])


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bench: error:"), err
    return err


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_a_non_finite_value_is_an_error_naming_its_row(tmp_path, capsys, value):
    assert report(tmp_path, GOOD + f"m4,d,acc,60\nm4,d,p,{value}\n") == 2
    err = one_error(capsys)
    assert "line 11 (m4 × d × p)" in err and "not finite" in err and "leave the value empty" in err


def test_an_empty_value_stays_a_missing_number(tmp_path, capsys):
    assert report(tmp_path, GOOD + "m4,d,acc,60\nm4,d,p,\n") == 0
    corr = pd.read_csv(tmp_path / "o" / "correlations.csv")
    assert corr.n.tolist() == [4]  # m4 has no score: left out, and the table says n = 4


def test_duplicated_rows_are_an_error_naming_both(tmp_path, capsys):
    assert report(tmp_path, GOOD + "m1,d,p,7\n") == 2
    err = one_error(capsys)
    assert "line 5 (m1 × d × p)" in err and "line 10 (m1 × d × p)" in err and "more than one row" in err


def test_a_seed_column_allows_repeats_and_averages_them(tmp_path, capsys):
    rows = "".join(f"m{i},d,{m},{v + s},{s}\n" for i in range(4) for m, v in (("acc", 50 + 10 * i), ("p", i))
                   for s in (0, 1))
    assert report(tmp_path, rows, header="model,dataset,metric,value,seed\n") == 0
    corr = pd.read_csv(tmp_path / "o" / "correlations.csv")
    assert corr.n.tolist() == [4] and corr.kendall.tolist() == [1.0]
    assert report(tmp_path, rows + "m0,d,p,5,1\n", header="model,dataset,metric,value,seed\n") == 2
    assert "(model, dataset, metric, seed)" in one_error(capsys)


def test_a_header_only_table_says_so(tmp_path, capsys):
    assert report(tmp_path, "") == 2
    assert "has a header but no rows" in one_error(capsys)


def test_bootstrap_is_at_least_one_or_zero_for_off(tmp_path, capsys):
    for bad in ("-5", "x"):
        assert report(tmp_path, GOOD, "--bootstrap", bad) == 2
        assert "--bootstrap" in one_error(capsys)
    assert report(tmp_path, GOOD, "--bootstrap", "0") == 0
    corr = pd.read_csv(tmp_path / "o" / "correlations.csv")
    assert corr.kendall.notna().all() and corr.filter(like="_lo").isna().all(axis=None)
    assert report(tmp_path, GOOD, "--bootstrap", "1") == 0


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "soon"])
def test_wait_timeout_is_a_number_of_seconds_at_least_zero(tmp_path, capsys, bad):
    (tmp_path / "zoo.yaml").write_text("models:\n  - {name: a, timm: resnet18, pretrained: false}\n")
    (tmp_path / "d.yaml").write_text("datasets:\n  - {name: d, packaged: digits}\n")
    assert main(["run", "--zoo", str(tmp_path / "zoo.yaml"), "--datasets", str(tmp_path / "d.yaml"),
                 "--out", str(tmp_path / "r"), "--launcher", "local", "--wait-timeout", bad]) == 2
    assert "--wait-timeout" in one_error(capsys) and not (tmp_path / "r").exists()
