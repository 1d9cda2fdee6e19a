from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import REFERENCE, reference_file

from benchmark.cli import main
from benchmark.records import write_record
from benchmark.report.stats import bootstrap_ci, correlations, selection
from benchmark.report.tables import ProxyMeta, correlation_table

REF = REFERENCE / "tllib"  # the published tables, in the repository (tests/reference/PROVENANCE.md)


def require_reference():
    """Fails (never skips) when a table is missing."""
    for name in ("scores_long.csv", "reported_correlations.csv"):
        reference_file("tllib", name)


def test_statistics_match_scipy_with_and_without_ties():
    rng = np.random.default_rng(0)
    for x, y in [(rng.normal(size=12), rng.normal(size=12)),
                 (np.array([1, 2, 2, 3, 3, 3, 4.0]), np.array([1, 1, 2, 3, 5, 4, 4.0]))]:
        c = correlations(x, y)
        assert c["kendall"] == pytest.approx(stats.kendalltau(x, y, variant="b").statistic)
        assert c["weighted_tau"] == pytest.approx(stats.weightedtau(x, y).statistic)
        assert c["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
        assert c["pearson"] == pytest.approx(stats.pearsonr(x, y).statistic)


def test_logit_transform_applies_to_percentages_before_pearson():
    x, y = np.array([60.0, 70, 85, 90, 97]), np.array([55.0, 75, 80, 93, 95])
    lg = lambda v: np.log(v / 100 / (1 - v / 100))  # noqa: E731
    c = correlations(x, y, logit_score=True, logit_target=True)
    assert c["pearson"] == pytest.approx(stats.pearsonr(lg(x), lg(y)).statistic)
    assert c["kendall"] == pytest.approx(stats.kendalltau(x, y).statistic)


def test_bootstrap_is_reproducible_under_a_seed():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=10), rng.normal(size=10)
    a, b = bootstrap_ci(x, y, n_boot=200, seed=3), bootstrap_ci(x, y, n_boot=200, seed=3)
    assert a == b and a != bootstrap_ci(x, y, n_boot=200, seed=4)
    assert a["kendall_lo"] <= correlations(x, y)["kendall"] <= a["kendall_hi"]


def test_lower_is_better_proxies_are_oriented():
    target = pd.DataFrame({"model": list("abcde"), "dataset": "d", "target": [50, 60, 70, 80, 90.0]})
    scores = pd.DataFrame({"model": list("abcde"), "dataset": "d", "proxy": "nc1", "score": [5, 4, 3, 2, 1.0]})
    corr = correlation_table(scores, target, {"nc1": ProxyMeta(higher_is_better=False)}, "ft", n_boot=50)
    row = corr.iloc[0]
    assert row.kendall == pytest.approx(1.0) and row.weighted_tau == pytest.approx(1.0)
    assert row.regret_top1 == 0 and row.best_in_top3 and row.orientation.startswith("negated")
    assert selection([3, 1, 2], [70, 90, 80]) == {"regret_top1": 20, "relative_top": 70 / 90, "best_in_top3": True}


def test_reproduces_published_tllib_correlations(tmp_path):
    require_reference()
    ref = pd.read_csv(REF / "reported_correlations.csv")
    usable = ref[ref.usable == "yes"]
    assert len(usable) == 49
    method_to_metric = {"HScore": "hscore", "LEEP": "leep", "LogME": "logme", "NCE": "nce"}
    assert main(["report", "--table", str(REF / "scores_long.csv"), "--target", "finetune_acc",
                 "--proxy", "hscore,leep,logme,nce", "--out", str(tmp_path), "--bootstrap", "0",
                 "--no-figures"]) == 0
    corr = pd.read_csv(tmp_path / "correlations.csv").set_index(["dataset", "proxy"])
    for r in usable.itertuples():
        got = corr.loc[(r.dataset, method_to_metric[r.method]), r.statistic]
        assert got == pytest.approx(r.reported, abs=0.005), (r.dataset, r.method, r.statistic)


def _record(root, model, dataset, protocol, metrics, status="ok", primary="top1", hib=True, seed=0, warnings=()):
    rec = {"model": model, "dataset": dataset, "protocol": protocol, "seed": seed, "status": status,
           "primary": primary, "higher_is_better": hib, "config_hash": "x", "warnings": list(warnings),
           "provenance": {"torch": "t", "timm": "m", "bench_version": "0", "device": "cpu"}}
    if status == "ok":
        rec["metrics"] = metrics
    else:
        rec["error"] = "boom: out of memory"
    write_record(Path(root) / dataset / model / f"{protocol}__seed{seed}.json", rec)


def test_report_end_to_end_on_hand_made_records_with_an_error_cell(tmp_path):
    res = tmp_path / "res"
    rng = np.random.default_rng(0)
    models = [f"model_{i:02d}" for i in range(10)]
    for d in ("alpha", "beta"):
        for i, m in enumerate(models):
            ft = 60 + 3 * i + rng.normal()
            for seed in (0, 1):
                flag = ["chosen run ends at chance (val top1 10.00 <= majority-class rate 10.00)"] \
                    if (d, m, seed) == ("beta", "model_05", 1) else []
                _record(res, m, d, "finetune", {"top1": ft + seed}, seed=seed, warnings=flag)
                _record(res, m, d, "linear", {"top1": ft - 10 + rng.normal() * 3}, seed=seed)
                _record(res, m, d, "bn_tune", {"top1": ft - 5 + rng.normal()}, seed=seed)
                _record(res, m, d, "nc1", {"nc1": 1.0 / (i + 1)}, primary="nc1", hib=False, seed=seed)
    _record(res, "model_03", "beta", "linear", {}, status="error", seed=1)
    out = tmp_path / "rep"
    assert main(["report", "--results", str(res), "--out", str(out), "--bootstrap", "100"]) == 0
    corr = pd.read_csv(out / "correlations.csv")
    assert {"dataset", "proxy", "target", "n", "kendall", "weighted_tau", "spearman", "pearson",
            "kendall_lo", "kendall_hi", "regret_top1", "best_in_top3"} <= set(corr.columns)
    assert len(corr) == 6 and (corr.n == 10).all()
    nc1 = corr[corr.proxy == "nc1"]
    assert (nc1.kendall > 0.9).all()  # lower NC1 tracks higher accuracy: oriented to positive
    missing = pd.read_csv(out / "missing.csv")
    assert len(missing) == 1 and missing.iloc[0].status == "error"
    results = pd.read_csv(out / "results.csv")
    assert {"seed_mean", "seed_std", "n_seeds"} <= set(results.columns) and (results.n_seeds <= 2).all()
    index = (out / "README.md").read_text()
    assert "model_03" in index and "out of memory" in index and "![scatter_grid.png]" in index
    warned = index.split("## Warnings")[1].split("## Missing")[0]  # training warnings are shown, per cell
    assert "model_05" in warned and "ends at chance" in warned and "model_04" not in warned
    for f in ("scatter_grid.png", "rank_chart.png", "linear_vs_bn_tune.png", "heatmap_kendall.png",
              "heatmap_weighted_tau.png", "heatmap_spearman.png", "heatmap_pearson.png"):
        assert (out / f).stat().st_size > 10_000


def test_scatter_grid_has_one_panel_per_dataset_and_proxy(tmp_path):
    from benchmark.report import plots
    target = pd.DataFrame({"model": list("abc") * 2, "dataset": ["d1"] * 3 + ["d2"] * 3,
                           "target": [1, 2, 3, 3, 2, 1.0]})
    scores = pd.concat([target.rename(columns={"target": "score"}).assign(proxy=p) for p in ("p1", "p2", "p3")])
    corr = correlation_table(scores, target, {}, "ft", n_boot=0)
    n = plots.scatter_grid(scores, target, corr, plots.model_style("abc"), "ft", tmp_path / "s.png")
    assert n == 6


def test_report_without_target_says_what_to_do(tmp_path, capsys):
    _record(tmp_path / "r", "m", "d", "linear", {"top1": 50.0})
    assert main(["report", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o")]) == 2
    assert "no ok records for target 'finetune'" in capsys.readouterr().err
    assert main(["report", "--results", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    _record(tmp_path / "errors_only", "m", "d", "knn", {}, status="error")
    assert main(["report", "--results", str(tmp_path / "errors_only"), "--out", str(tmp_path / "o"),
                 "--target", "knn"]) == 2
    assert "no ok records, 1 error record(s)" in capsys.readouterr().err
    assert pd.read_csv(tmp_path / "o" / "missing.csv").status.tolist() == ["error"]


def test_table_percent_flag_decides_the_logit_and_the_report_says_so(tmp_path, capsys):
    """--percent marks metrics in % beyond the recognised names; a lower-is-better one (ECE in %) is transformed
    before it is oriented, so its Pearson is exactly −Pearson(logit(ece), logit(acc))."""
    acc = np.array([62.0, 71.5, 80.2, 88.9, 93.4, 75.0])
    probe = np.array([55.0, 70.0, 78.0, 92.0, 90.0, 69.0])
    ece = np.array([12.0, 9.5, 7.0, 3.5, 2.0, 8.8])
    rows = [(m, "d", metric, v) for metric, vals in (("acc", acc), ("probe", probe), ("ece", ece))
            for m, v in zip("abcdef", vals)]
    table = tmp_path / "t.csv"
    pd.DataFrame(rows, columns=["model", "dataset", "metric", "value"]).to_csv(table, index=False)
    lg = lambda v: np.log(v / 100 / (1 - v / 100))  # noqa: E731
    base = ["report", "--table", str(table), "--target", "acc", "--bootstrap", "0", "--no-figures",
            "--transform", "logit", "--lower-is-better", "ece"]

    assert main(base + ["--percent", "probe,ece", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "logit(v/100) before Pearson on the target 'acc' and on ece, probe." in out
    corr = pd.read_csv(tmp_path / "a" / "correlations.csv").set_index("proxy")
    assert corr.loc["probe", "pearson"] == pytest.approx(stats.pearsonr(lg(probe), lg(acc)).statistic)
    assert corr.loc["ece", "pearson"] == pytest.approx(-stats.pearsonr(lg(ece), lg(acc)).statistic)
    assert corr.loc["ece", "kendall"] == pytest.approx(-stats.kendalltau(ece, acc).statistic)
    assert corr.logit_score.all() and corr.logit_target.all()
    assert "on ece, probe" in (tmp_path / "a" / "correlations.md").read_text()

    assert main(base + ["--out", str(tmp_path / "b")]) == 0  # not marked: left alone, and the report says so
    assert "left as is (not percentages): ece, probe" in capsys.readouterr().out
    corr = pd.read_csv(tmp_path / "b" / "correlations.csv").set_index("proxy")
    assert corr.loc["probe", "pearson"] == pytest.approx(stats.pearsonr(probe, lg(acc)).statistic)
    assert corr.loc["ece", "pearson"] == pytest.approx(-stats.pearsonr(ece, lg(acc)).statistic)
    assert not corr.logit_score.any() and corr.logit_target.all()


def test_percent_refuses_a_metric_that_is_not_a_percentage(tmp_path, capsys):
    rows = [(m, "d", "acc", 50.0 + i) for i, m in enumerate("abc")] + [(m, "d", "logme", 1.5 - i)
                                                                          for i, m in enumerate("abc")]
    table = tmp_path / "t.csv"
    pd.DataFrame(rows, columns=["model", "dataset", "metric", "value"]).to_csv(table, index=False)
    assert main(["report", "--table", str(table), "--target", "acc", "--transform", "logit", "--percent", "logme",
                 "--out", str(tmp_path / "o"), "--no-figures"]) == 2
    assert "'logme' is treated as a percentage (--percent) but has values outside [0, 100]" in capsys.readouterr().err
