"""The report's layer section from a planted long table: correlations against scipy, best layers, figures."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark.report.layer_plots import best_layers, layer_means, layer_report, nc1_accuracy_correlations
from benchmark.report.tables import ProxyMeta

LAYERS = ["b0", "b1", "b2", "last"]


def _long():
    rows = []
    nc1 = {"m1": [8.0, 4.0, 1.0, 0.5], "m2": [3.0, 2.0, 2.5, 2.8]}
    lin = {"m1": [40.0, 55.0, 80.0, 82.0], "m2": [60.0, 70.0, 65.0, 50.0]}
    for m in nc1:
        for i, layer in enumerate(LAYERS):
            # 'last' of m2 comes from a record made before layers existed: no layer_index
            idx = None if (m == "m2" and layer == "last") else i
            for proto, metric, v in (("nc1", "nc1", nc1[m][i]), ("linear", "top1", lin[m][i]),
                                     ("linear", "wd", 0.1)):
                for seed, jitter in ((0, -0.5), (1, 0.5)):
                    rows.append({"model": m, "dataset": "d", "protocol": proto, "seed": seed, "layer": layer,
                                 "layer_index": idx, "metric": metric,
                                 "value": v + (jitter if metric == "top1" else 0.0)})
    return pd.DataFrame(rows)


def test_layer_tables_against_scipy_and_planted_best(tmp_path):
    primary = {"nc1": "nc1", "linear": "top1"}
    means = layer_means(_long(), primary)
    m2 = means[(means.model == "m2") & (means.protocol == "nc1")]
    assert list(m2.layer) == LAYERS and list(m2.depth) == [0, 1, 2, 3]  # 'last' placed after the deepest block
    corr = nc1_accuracy_correlations(means).set_index(["model", "accuracy"])
    for m, nc, acc in (("m1", [8.0, 4.0, 1.0, 0.5], [40, 55, 80, 82]), ("m2", [3.0, 2.0, 2.5, 2.8], [60, 70, 65, 50])):
        # layers are sorted by name inside the pivot; correlation does not depend on the order
        assert corr.loc[(m, "linear"), "pearson"] == pytest.approx(stats.pearsonr(nc, acc)[0])
        assert corr.loc[(m, "linear"), "spearman"] == pytest.approx(stats.spearmanr(nc, acc)[0])
    meta = {"nc1": ProxyMeta(False, False), "linear": ProxyMeta(True, True)}
    best = best_layers(means, meta).set_index(["model", "proxy"])
    assert best.loc[("m1", "nc1"), "best_layer"] == "last" and best.loc[("m1", "nc1"), "linear_regret"] == 0
    assert best.loc[("m2", "nc1"), "best_layer"] == "b1" and best.loc[("m2", "linear"), "best_layer"] == "b1"
    m2_pick = best.loc[("m2", "nc1")]
    assert m2_pick.linear_at_pick == pytest.approx(70.0) and m2_pick.linear_regret == pytest.approx(0.0)
    figs, lines = layer_report(tmp_path, _long(), primary, meta)
    assert figs == ["layers_depth_d.png", "layers_linear_vs_nc1_d.png"]
    assert all((tmp_path / f).stat().st_size > 10_000 for f in figs)
    assert (tmp_path / "layers_best.csv").exists() and lines[0] == "## Layers"


def test_no_layer_section_without_layers():
    long = _long()
    assert layer_means(long[long.layer == "last"], {"nc1": "nc1", "linear": "top1"}).empty


def test_trained_layer_nc1_from_records(tmp_path):
    import json
    from benchmark.report.layer_plots import trained_layer_nc1
    (tmp_path / "d" / "m").mkdir(parents=True)
    rec = {"model": "m", "dataset": "d", "protocol": "layer_ft", "seed": 0, "status": "ok",
           "hyperparameters": {"block": 2}, "diagnostics": {"layer_nc1": {"trained": [3.0, 1.0, 0.2],
                                                                         "pretrained": [3.0, 2.0, 1.5]}}}
    (tmp_path / "d" / "m" / "layer_ft__seed0.json").write_text(json.dumps(rec))
    t = trained_layer_nc1(tmp_path)
    assert t.block.tolist() == [1, 2, 3] and t.nc1.tolist() == [3.0, 1.0, 0.2] and set(t.tuned_block) == {2}
    figs, lines = layer_report(tmp_path, pd.DataFrame(columns=["layer"]), {}, {}, results=tmp_path)
    assert figs == ["layers_trained_nc1_d.png"] and (tmp_path / "layers_trained_nc1.csv").exists()


def test_block_choice_from_planted_layer_ft_records(tmp_path):
    """Each proxy's best layer mapped to the Layer-FT block that ends there, against the best swept block: a
    proxy picking the best block has regret 0, one picking a worse swept block loses the planted difference, a
    pick no block ends (a stem layer) has no block."""
    import json
    from benchmark.report.block_choice import block_choice_summary, block_choice_table, block_sweeps, layer_to_block
    blocks = [["layer1.0"], ["layer1.1", "layer1"], ["layer2.0"], ["layer2.1", "layer2"]]
    assert [layer_to_block(x, blocks) for x in ("layer1", "layer2.0", "last", "act1")] == [2, 3, 4, None]
    val = {0: {2: 60.0, 4: 80.0}, 1: {2: 62.0, 4: 78.0}}  # block 4 best on the seed mean (79 vs 61)
    for seed, per in val.items():
        sweep = [{"hp": {"lr": lr, "wd": 1e-5, "block": b}, "val_top1": v - (lr == 0.1)}
                 for b, v in per.items() for lr in (0.1, 0.01)]
        sweep.append({"hp": {"lr": 1.0, "wd": 1e-5, "block": 2}, "val_top1": float("-inf"), "diverged": True})
        rec = {"model": "r", "dataset": "d", "protocol": "layer_ft", "seed": seed, "status": "ok", "metrics": {"top1": 1},
               "training": {"sweep": sweep, "block_layers": blocks}}
        (tmp_path / "d" / "r").mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / "r" / f"layer_ft__seed{seed}.json").write_text(json.dumps(rec))
    sweeps, layers = block_sweeps(tmp_path)
    assert len(sweeps) == 4 and layers[("d", "r")] == blocks
    best = pd.DataFrame([{"dataset": "d", "model": "r", "proxy": p, "best_layer": lay}
                         for p, lay in (("nc1", "layer2"), ("knn", "layer1"), ("cdnv", "act1"), ("linear", "last"))])
    table = block_choice_table(best, sweeps, layers).set_index("proxy")
    assert (table.best_block == 4).all() and table.val_at_best.iloc[0] == pytest.approx(79.0)
    assert table.loc["nc1", "proxy_block"] == 4 and table.loc["nc1", "regret"] == 0 and table.loc["nc1", "hit"]
    assert table.loc["linear", "proxy_block"] == 4 and table.loc["linear", "hit"]
    assert table.loc["knn", "proxy_block"] == 2 and table.loc["knn", "regret"] == pytest.approx(18.0)
    assert pd.isna(table.loc["cdnv", "proxy_block"]) and pd.isna(table.loc["cdnv", "regret"])
    summary = block_choice_summary(table.reset_index()).set_index("proxy")
    assert summary.loc["nc1", "hits"] == 1 and summary.loc["knn", "mean_regret"] == pytest.approx(18.0)
