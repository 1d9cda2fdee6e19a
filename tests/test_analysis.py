"""Cross-domain correlation, significance between proxies, cost per quality, transfer diagnostics, bench select."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from benchmark.cli import main
from benchmark.config import load_zoo
from benchmark.errors import ConfigError
from benchmark.records import write_record
from benchmark.report import compare, cost, cross
from benchmark.report.tables import ProxyMeta
from benchmark.training import transfer

MODELS = [f"m{i}" for i in range(8)]


def _records(root, datasets=("a", "b", "c"), seed=0, costs=None):
    """finetune tracks the model index; `linear` orders models exactly like finetune; `knn` is noisy; nc1 is
    lower-is-better."""
    rng = np.random.default_rng(seed)
    costs = costs or {"finetune": 1000.0, "linear": 10.0, "knn": 1.0, "nc1": 0.5}
    for d in datasets:
        for i, m in enumerate(MODELS):
            ft = 50 + 4 * i + rng.normal()
            vals = {"finetune": ("top1", ft, True), "linear": ("top1", ft - 10, True),
                    "knn": ("top1", ft + rng.normal() * 10, True), "nc1": ("nc1", 1 / (i + 1) + rng.random(), False)}
            for proto, (prim, v, hib) in vals.items():
                rec = {"model": m, "dataset": d, "protocol": proto, "seed": 0, "status": "ok", "primary": prim,
                       "higher_is_better": hib, "config_hash": "x", "metrics": {prim: v},
                       "cost": {"wall_s": costs[proto] * 1.1, "device_s": costs[proto], "images": 100},
                       "provenance": {"device": "cpu", "wall_time_s": costs[proto] * 1.2}}
                write_record(Path(root) / d / m / f"{proto}__seed0.json", rec)


def test_cross_table_pairs_proxy_dataset_with_target_dataset_like_scipy():
    rng = np.random.default_rng(0)
    scores = pd.DataFrame([{"model": m, "dataset": d, "proxy": "p", "score": rng.normal()}
                           for d in ("A", "B") for m in MODELS])
    target = pd.DataFrame([{"model": m, "dataset": d, "target": rng.normal()} for d in ("A", "B") for m in MODELS])
    tab = cross.cross_table(scores, target, {}).set_index(["proxy_dataset", "target_dataset"])
    assert len(tab) == 4 and tab.loc[("A", "A"), "in_domain"] and not tab.loc[("A", "B"), "in_domain"]
    for a, b in [("A", "B"), ("B", "A"), ("A", "A")]:
        x = scores[scores.dataset == a].sort_values("model").score.to_numpy()
        y = target[target.dataset == b].sort_values("model").target.to_numpy()
        assert tab.loc[(a, b), "kendall"] == pytest.approx(stats.kendalltau(x, y).statistic)
        assert tab.loc[(a, b), "weighted_tau"] == pytest.approx(stats.weightedtau(x, y).statistic)
        assert tab.loc[(a, b), "spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
        assert tab.loc[(a, b), "pearson"] == pytest.approx(stats.pearsonr(x, y).statistic)


def test_zoo_meta_loads_as_proxies_on_a_named_dataset_and_orients(tmp_path):
    (tmp_path / "z.yaml").write_text("models:\n" + "".join(
        f"  - {{name: {m}, timm: resnet18, meta: {{imagenet_top1: {60 + i}, imagenet_nc1: {1 / (i + 1)}, "
        f"params_m: {10 + i}}}}}\n" for i, m in enumerate(MODELS)))
    scores, meta = cross.meta_scores(load_zoo(tmp_path / "z.yaml"), known={"nc1": ProxyMeta(False)})
    assert set(zip(scores.dataset, scores.proxy)) == {("imagenet", "top1"), ("imagenet", "nc1"), ("model", "params_m")}
    assert meta["top1"].higher_is_better and not meta["nc1"].higher_is_better and not meta["params_m"].percent
    target = pd.DataFrame({"model": MODELS, "dataset": "D", "target": np.arange(8.0)})
    tab = cross.cross_table(scores, target, meta).set_index("proxy")
    assert tab.loc["top1", "kendall"] == pytest.approx(1) and tab.loc["nc1", "kendall"] == pytest.approx(1)
    (tmp_path / "bad.yaml").write_text("models:\n  - {name: x, timm: resnet18, meta: {imagenet_top1: high}}\n")
    with pytest.raises(ConfigError, match="bad.yaml: model 'x': meta 'imagenet_top1' must be a number"):
        cross.meta_scores(load_zoo(tmp_path / "bad.yaml"))


def test_paired_bootstrap_reproducible_and_zero_on_identical_proxies():
    rng = np.random.default_rng(1)
    a, b, y = rng.normal(size=12), rng.normal(size=12), rng.normal(size=12)
    r1, r2 = compare.paired_bootstrap(a, b, y, n_boot=200, seed=5), compare.paired_bootstrap(a, b, y, n_boot=200, seed=5)
    assert np.array_equal(r1["draws"], r2["draws"], equal_nan=True) and r1["kendall_lo"] == r2["kendall_lo"]
    assert not np.array_equal(r1["draws"], compare.paired_bootstrap(a, b, y, n_boot=200, seed=6)["draws"], equal_nan=True)
    assert r1["delta_kendall"] == pytest.approx(stats.kendalltau(a, y).statistic - stats.kendalltau(b, y).statistic)
    same = compare.paired_bootstrap(a, a, y, n_boot=200, seed=5)
    assert same["delta_kendall"] == 0 and same["kendall_lo"] == same["kendall_hi"] == 0
    assert same["delta_weighted_tau"] == 0 and same["weighted_tau_lo"] == same["weighted_tau_hi"] == 0


def test_wilcoxon_friedman_match_scipy_and_cd_diagram_is_drawn(tmp_path):
    rng = np.random.default_rng(2)
    rows = []
    for d in [f"d{k}" for k in range(7)]:
        y = rng.normal(size=8)
        for p, noise in (("good", 0.2), ("mid", 1.0), ("bad", 3.0)):
            rows += [{"model": m, "dataset": d, "proxy": p, "score": y[i] + noise * rng.normal()}
                     for i, m in enumerate(MODELS)]
        rows += [{"model": m, "dataset": d, "proxy": "target", "score": y[i]} for i, m in enumerate(MODELS)]
    df = pd.DataFrame(rows)
    target = df[df.proxy == "target"].rename(columns={"score": "target"})[["model", "dataset", "target"]]
    scores = df[df.proxy != "target"]
    per, pairs = compare.compare_proxies(scores, target, {}, n_boot=50, seed=0)
    corr = pd.DataFrame([{"dataset": d, "proxy": p, "kendall": stats.kendalltau(
        g.sort_values("model").score, target[target.dataset == d].sort_values("model").target).statistic}
        for (d, p), g in scores.groupby(["dataset", "proxy"])])
    row = pairs.set_index(["proxy_a", "proxy_b"]).loc[("bad", "good")]
    wide = corr.pivot(index="dataset", columns="proxy", values="kendall")
    ref = stats.wilcoxon(wide["bad"] - wide["good"])
    assert row.n_datasets == 7 and row.wilcoxon_p == pytest.approx(ref.pvalue)
    assert row.mean_delta_kendall == pytest.approx((wide["bad"] - wide["good"]).mean())
    assert row.ci_low <= row.mean_delta_kendall <= row.ci_high
    fr = compare.friedman(corr)
    ref = stats.friedmanchisquare(wide["bad"], wide["good"], wide["mid"])
    assert fr["statistic"] == pytest.approx(ref.statistic) and fr["pvalue"] == pytest.approx(ref.pvalue)
    assert fr["ranks"].index[0] == "good"
    compare.cd_diagram(fr, tmp_path / "cd.png")
    assert (tmp_path / "cd.png").stat().st_size > 10_000
    words = "\n".join(compare.verdict_words(pairs, fr))
    assert "good beats bad" in words and "Friedman" in words
    assert "Evidence is thin" in "\n".join(compare.verdict_words(pairs.assign(n_datasets=4), None))


def test_report_cross_significance_and_cost_from_records(tmp_path):
    _records(tmp_path / "r")
    old = json.loads((tmp_path / "r/a/m0/knn__seed0.json").read_text())
    del old["cost"]  # a record from before the cost field: wall time from provenance, device time unknown
    write_record(tmp_path / "r/a/m0/knn__seed0.json", old)
    out = tmp_path / "o"
    assert main(["report", "--results", str(tmp_path / "r"), "--out", str(out), "--cross", "--bootstrap", "20"]) == 0
    cr = pd.read_csv(out / "cross_correlations.csv")
    assert {"proxy", "proxy_dataset", "target_dataset", "n", "kendall", "weighted_tau", "spearman",
            "pearson"} <= set(cr.columns)
    assert len(cr[cr.proxy == "linear"]) == 9 and np.allclose(cr[(cr.proxy == "linear") & cr.in_domain].kendall, 1)
    pc = pd.read_csv(out / "proxy_comparison.csv")
    assert {"proxy_a", "proxy_b", "n_datasets", "mean_delta_kendall", "ci_low", "ci_high", "wilcoxon_p"} <= set(pc)
    c = pd.read_csv(out / "cost.csv").set_index("proxy")
    assert c.loc["linear", "cost_ratio_to_target"] == pytest.approx(10 / 1000)
    assert c.loc["knn", "median_cost_s"] == pytest.approx(1.1)  # wall-seconds: one knn cell lacks device time
    assert c.loc["linear", "pareto_tau"] and not c.loc["finetune", "pareto_tau"]  # linear: τ = 1 at 1/100 the cost
    for f in ("cd_diagram.png", "cost_quality.png", "cross_linear.png"):
        assert (out / f).stat().st_size > 10_000
    index = (out / "README.md").read_text()
    assert "Which proxy beats which" in index and "1/100 of its median cost" in index


def test_pareto_front_on_planted_points():
    assert cost.pareto([1, 2, 3, 4], [0.5, 0.4, 0.9, 0.9]).tolist() == [True, False, True, False]
    assert cost.pareto([1, 2], [3.0, 1.0], higher_is_better=False).tolist() == [True, True]


def test_linear_cka_matches_the_hsic_formula_and_is_one_on_identical_features():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 5, generator=g), torch.randn(30, 7, generator=g)
    n = 30
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l_ = x.double() @ x.double().T, y.double() @ y.double().T
    hsic = lambda a, b: torch.trace(a @ h @ b @ h)  # noqa: E731
    ref = hsic(k, l_) / torch.sqrt(hsic(k, k) * hsic(l_, l_))
    assert transfer.linear_cka(x, y) == pytest.approx(ref.item(), rel=1e-10)
    assert transfer.linear_cka(x, x) == pytest.approx(1.0)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g))
    assert transfer.linear_cka(x, 3 * x @ q + 1) == pytest.approx(1.0)  # invariant to rotation, scale, shift


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(nn.Sequential(nn.Linear(6, 16), nn.ReLU()), nn.Sequential(nn.Linear(16, 16),
                                                                                             nn.ReLU()))

    def forward(self, x):
        return self.blocks(x)


def _tiny_task():
    from benchmark.training.surgery import WithHead
    torch.manual_seed(0)
    x = torch.randn(64, 6)
    y = (x[:, 0] > 0).long()
    pre = Tiny()
    ft = WithHead(Tiny(), nn.Linear(16, 2))
    ft.backbone.load_state_dict(pre.state_dict())
    opt = torch.optim.SGD(list(ft.backbone.blocks[1].parameters()) + list(ft.head.parameters()), lr=0.5)
    for _ in range(100):  # block 1 stays pre-trained; block 2 and the head learn the task
        opt.zero_grad()
        nn.functional.cross_entropy(ft(x), y).backward()
        opt.step()
    return pre, ft, [(x[:32], y[:32]), (x[32:], y[32:])]


def test_criticality_zero_for_an_unchanged_block_and_barrier_zero_between_identical_nets():
    pre, ft, batches = _tiny_task()
    crit = transfer.criticality(ft, pre, batches, "cpu", tol=1.0)
    assert crit[0]["alpha_min"] == 0 and crit[0]["drop"] == 0
    assert crit[1]["drop"] > 5 and crit[1]["alpha_min"] > 0  # the trained block matters
    b = transfer.barrier(ft, ft.state_dict(), batches, "cpu")
    assert len(b["t"]) == 11 and b["loss_barrier"] == pytest.approx(0, abs=1e-6) and b["top1_barrier"] == 0
    assert transfer.cka_per_block(pre, ft.backbone, batches, "cpu")[0] == pytest.approx(1.0)


def test_transfer_diagnostics_in_a_training_cell_and_the_hp_is_checked(tmp_path):
    from benchmark.config import load_datasets
    from benchmark.runner import RunOptions, run_grid
    (tmp_path / "z.yaml").write_text("models:\n  - {name: r18, timm: resnet18, pretrained: false}\n")
    (tmp_path / "d.yaml").write_text(
        "settings: {protocols: [linear_aug], target: linear_aug, seeds: [0, 1]}\n"
        "protocols:\n  linear_aug: {epochs: 1, batch_size: 32, diagnostics: [cka, criticality, barrier]}\n"
        "datasets:\n  - {name: textures, packaged: textures, resolution: 16, max_train_per_class: 8, max_test_per_class: 3}\n")
    s = run_grid(load_zoo(tmp_path / "z.yaml"), load_datasets(tmp_path / "d.yaml"), RunOptions(out=str(tmp_path / "r")),
                 log=lambda *_: None)
    assert s.ok == 2, s.errors
    tr = json.loads((tmp_path / "r/textures/r18/linear_aug__seed1.json").read_text())["diagnostics"]["transfer"]
    assert len(tr["cka"]) == 8 and all(c == pytest.approx(1.0) for c in tr["cka"])  # head-only: blocks unchanged
    assert all(c["alpha_min"] == 0 and c["drop"] == 0 for c in tr["criticality"])
    assert tr["barrier"]["other_seed"] == 0 and len(tr["barrier"]["loss"]) == 11
    (tmp_path / "bad.yaml").write_text("protocols:\n  finetune: {diagnostics: [cka, ckka]}\ndatasets: []\n")
    from benchmark.runner import protocol_hp
    with pytest.raises(ConfigError, match="unknown transfer diagnostic 'ckka'"):
        protocol_hp(load_datasets(tmp_path / "bad.yaml"), "finetune")
    assert main(["report", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o"), "--target",
                 "linear_aug", "--bootstrap", "0"]) == 0
    assert (tmp_path / "o/transfer_barrier_textures_linear_aug.png").exists()


def test_select_simulation_regret_zero_when_the_best_proxys_first_pick_is_best(tmp_path, capsys):
    from benchmark.select import evidence, parse_budget, simulate
    _records(tmp_path / "r")
    summ, cst, meta = evidence(tmp_path / "r", "finetune")
    sim = simulate(summ, cst, meta, "finetune", budgets_s=[parse_budget("1200s")])
    steps = sim[sim.budget_s.isna()]
    first = steps[steps.k == 1]
    assert (first.proxy == "linear").all() and (first.regret == 0).all() and len(first) == 3
    assert first.cost_s.iloc[0] == pytest.approx(8 * 10 + 1000)  # the proxy on every model + one fine-tune
    at_budget = sim[sim.budget_s.notna()]
    assert (at_budget.k == 1).all() and (at_budget.regret == 0).all()
    assert parse_budget("4h") == 14400 and parse_budget("90m") == 5400
    assert main(["select", "--simulate", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o/select_simulation.csv").exists()
    assert main(["select", "--simulate", "--results", str(tmp_path / "r"), "--budget", "soon"]) == 2


def test_select_live_ranks_by_the_best_proxy_and_stops_at_the_budget(tmp_path, monkeypatch, capsys):
    """The grid is replaced by a fake that writes records with a known cost: this tests the budget accounting,
    not training (which test_training covers)."""
    import benchmark.runner as grid
    _records(tmp_path / "r")
    (tmp_path / "z.yaml").write_text("models:\n" + "".join(f"  - {{name: {m}, timm: resnet18}}\n" for m in MODELS))
    (tmp_path / "d.yaml").write_text("datasets:\n  - {name: new, packaged: textures}\n")
    calls = []

    def fake_grid(zoo, dsets, opts, log=print):
        for m in opts.models or [x.name for x in zoo.models]:
            for p in opts.protocols:
                i = MODELS.index(m)
                v = {"finetune": 90 - abs(i - 5), "linear": 80 - abs(i - 5)}.get(p, float(i))
                calls.append((m, p))
                write_record(tmp_path / "r" / "new" / m / f"{p}__seed0.json",
                             {"model": m, "dataset": "new", "protocol": p, "seed": 0, "status": "ok",
                              "primary": "top1", "metrics": {"top1": v},
                              "cost": {"wall_s": 1.0, "device_s": 600.0 if p == "finetune" else 10.0, "images": 1}})
    monkeypatch.setattr(grid, "run_grid", fake_grid)
    assert main(["select", "--zoo", str(tmp_path / "z.yaml"), "--datasets", str(tmp_path / "d.yaml"), "--dataset",
                 "new", "--budget", "25m", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    # linear (τ = 1 elsewhere) is chosen; it ranks m5 first, then m4/m6; 80 s of proxy + 2 × 600 s fit in 1500 s
    assert "proxy chosen on the existing records: linear" in text
    assert [c for c in calls if c[1] == "finetune"] == [("m5", "finetune"), ("m4", "finetune")]  # tie: by name
    table = pd.read_csv(tmp_path / "o/select_new.csv")
    assert table.model.iloc[0] == "m5" and len(table) == 2 and table.spent_s.iloc[-1] == pytest.approx(80 + 1200)
    assert "chosen: m5" in text and "fine-tuning all 8 models would cost ~1.33 h" in text


def test_point_labels_of_a_crowded_cluster_do_not_overlap_and_stay_inside():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from benchmark.report.labels import place_labels
    rng = np.random.default_rng(0)
    xs, ys = list(10 ** rng.uniform(-0.3, 0.3, 14)), list(rng.uniform(0.45, 0.65, 14))  # one dense cluster
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(xs, ys)
    ax.set_xscale("log")
    ax.margins(x=0.6, y=0.6)
    arts = place_labels(ax, xs, ys, [f"proxy_{i}" for i in range(14)])
    from matplotlib.text import Text
    r = fig.canvas.get_renderer()
    for a in arts:
        a.update_positions(r)
    boxes = [Text.get_window_extent(a, r) for a in arts]  # the text alone (an annotation's includes its leader)
    frame = ax.get_window_extent(r)
    assert len(boxes) == 14 and all(frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) for b in boxes)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)
