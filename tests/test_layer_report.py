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
