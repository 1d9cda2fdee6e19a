"""The target's noise ceiling: recomputed from records with scipy, flagged where seed noise swamps the models,
unknown with one seed, and read by the significance tests, `bench select` and published tables with seeds."""
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark.cli import main
from benchmark.records import write_record

MODELS = [f"m{i}" for i in range(8)]


def _rec(root, m, d, proto, seed, prim, v, hib=True):
    write_record(Path(root) / d / m / f"{proto}__seed{seed}.json",
                 {"model": m, "dataset": d, "protocol": proto, "seed": seed, "status": "ok", "primary": prim,
                  "higher_is_better": hib, "config_hash": "x", "metrics": {prim: v},
                  "cost": {"wall_s": 1.0, "device_s": 1.0, "images": 1}, "provenance": {"device": "cpu"}})


def planted(root, seeds=(0, 1, 2), noise=None):
    """`steady`: the target's seed noise (sd 0.3) is far below the 2-point steps between models; `noisy`: seed
    noise sd 8 swamps them. `linear` tracks the true model order on both; `knn` is the reverse order."""
    rng = np.random.default_rng(0)
    noise = noise or {"steady": 0.3, "noisy": 8.0}
    for d, sd in noise.items():
        for i, m in enumerate(MODELS):
            for s in seeds:
                _rec(root, m, d, "finetune", s, "top1", 60 + 2 * i + sd * rng.normal())
                _rec(root, m, d, "linear", s, "top1", 50 + 2 * i + 0.1 * rng.normal())
                _rec(root, m, d, "knn", s, "top1", 70 - 2 * i + 0.1 * rng.normal())


def _report(res, out, *extra):
    assert main(["report", "--results", str(res), "--out", str(out), "--bootstrap", "30", "--no-figures",
                 *extra]) == 0
    return pd.read_csv(out / "correlations.csv")


def test_ceiling_recomputed_from_records_with_scipy_and_noise_flagged(tmp_path):
    planted(tmp_path / "r")
    corr = _report(tmp_path / "r", tmp_path / "o")
    assert {"target_seeds", "target_seed_sd", "ceiling_kendall"} <= set(corr.columns)
    # the reference: straight from the record files, scipy's τ-b over every pair of distinct seeds
    vals = {}
    for p in (tmp_path / "r").rglob("finetune__seed*.json"):
        r = json.loads(p.read_text())
        vals[(r["dataset"], r["seed"], r["model"])] = r["metrics"]["top1"]
    for d in ("steady", "noisy"):
        at = {s: [vals[(d, s, m)] for m in MODELS] for s in (0, 1, 2)}
        taus = [stats.kendalltau(at[a], at[b], variant="b").statistic for a, b in itertools.combinations(at, 2)]
        sd = np.mean([np.std([at[s][i] for s in at], ddof=1) for i in range(len(MODELS))])
        row = corr[corr.dataset == d].iloc[0]
        assert row.target_seeds == 3 and row.ceiling_kendall == pytest.approx(np.mean(taus))
        assert row.target_seed_sd == pytest.approx(sd)
    steady, noisy = (corr[corr.dataset == d].set_index("proxy") for d in ("steady", "noisy"))
    assert steady.ceiling_kendall.iloc[0] > 0.9 and bool(steady.target_can_rank.iloc[0])
    assert noisy.ceiling_kendall.iloc[0] < 0.5 and not bool(noisy.target_can_rank.iloc[0])
    assert steady.loc["linear", "vs_ceiling"] == "within reach" and steady.loc["knn", "vs_ceiling"] == "below ceiling"
    assert (noisy.vs_ceiling == "target cannot rank").all()
    for f in ("correlations.md", "summary.md", "README.md"):
        text = (tmp_path / "o" / f).read_text()
        section = text.split("## Noise ceiling of the target")[1]
        assert "**noisy**" in section and "The target cannot rank the models here" in section.split("**steady**")[0]
        assert "Within the ceiling's reach" in section.split("**steady**")[1].split("\n")[0]
    # the across-dataset tests leave the noisy dataset out and say so
    pairs = pd.read_csv(tmp_path / "o" / "proxy_comparison.csv")
    assert (pairs.n_datasets == 1).all() and (pairs.excluded_datasets == "noisy").all()
    assert "Left out of these tests: noisy" in (tmp_path / "o" / "README.md").read_text()


def test_one_seed_says_the_ceiling_is_unknown_and_how_many_seeds_to_add(tmp_path):
    planted(tmp_path / "r", seeds=(0,))
    corr = _report(tmp_path / "r", tmp_path / "o")
    assert (corr.target_seeds == 1).all() and corr.ceiling_kendall.isna().all()
    assert (corr.vs_ceiling == "ceiling unknown").all()
    index = (tmp_path / "o" / "README.md").read_text().split("## Noise ceiling of the target")[1]
    assert "**steady**: ceiling unknown" in index and "add 2 seed(s) of the target (3 in all" in index


def test_select_chooses_its_proxy_only_where_the_target_can_rank(tmp_path):
    """knn agrees perfectly with the seed mean of three targets that are pure seed noise, linear with the one
    steady target (knn reversed there): counted everywhere knn would win (mean τ 0.5 against about 0.25); the
    noisy datasets must not vote."""
    from benchmark.select import best_proxy, evidence
    root = tmp_path / "r"
    planted(root, noise={"a": 0.3, "b": 0.3})
    rng = np.random.default_rng(1)
    for z in ("z1", "z2", "z3"):
        for i, m in enumerate(MODELS):  # target noise 30 points, no model effect
            ft = [60 + 30 * rng.normal() for _ in range(3)]
            for s in range(3):
                _rec(root, m, z, "finetune", s, "top1", ft[s])
                _rec(root, m, z, "linear", s, "top1", float(rng.normal()))
                _rec(root, m, z, "knn", s, "top1", float(np.mean(ft)) * 10)
    summ, _, meta = evidence(root, "finetune")
    assert not summ[summ.dataset.str.startswith("z")].target_can_rank.astype(bool).any()
    proxy, ranking = best_proxy(summ, meta, "finetune", exclude="a")
    assert proxy == "linear" and ranking["linear"] == pytest.approx(1.0)
    everywhere, _ = best_proxy(summ.assign(target_can_rank=True), meta, "finetune", exclude="a")
    assert everywhere == "knn"  # the planted trap: without the ceiling the noise would choose
    assert main(["select", "--simulate", "--results", str(root), "--out", str(tmp_path / "o")]) == 0
    sim = pd.read_csv(tmp_path / "o" / "select_simulation.csv")
    assert {"ceiling_kendall", "target_can_rank"} <= set(sim.columns)


def test_published_table_with_a_seed_column_gets_the_ceiling(tmp_path):
    rng = np.random.default_rng(3)
    rows = [{"model": m, "dataset": "d", "metric": metric, "seed": s,
             "value": (60 + 3 * i + rng.normal()) if metric == "acc" else float(i)}
            for i, m in enumerate(MODELS) for s in (0, 1) for metric in ("acc", "score")]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    assert main(["report", "--table", str(tmp_path / "t.csv"), "--target", "acc", "--out", str(tmp_path / "o"),
                 "--bootstrap", "0", "--no-figures"]) == 0
    corr = pd.read_csv(tmp_path / "o" / "correlations.csv")
    wide = pd.DataFrame(rows).query("metric == 'acc'").pivot(index="model", columns="seed", values="value")
    assert corr.target_seeds.iloc[0] == 2
    assert corr.ceiling_kendall.iloc[0] == pytest.approx(stats.kendalltau(wide[0], wide[1]).statistic)
    assert corr.kendall.iloc[0] == pytest.approx(1.0)  # scores averaged over seeds, target too
