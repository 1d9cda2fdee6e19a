import json

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.config import DatasetEntry
from benchmark.data import load_source
from benchmark.records import write_record
from benchmark.report.decide import choose_trusted, flag, paired_difference


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


MNV2 = "  - {name: mnv2, package: mobilenetv2_100}\n"
COPY = "  - {name: mnv2_copy, package: mobilenetv2_100}\n"  # the same weights: a planted tie
RANDOM = "  - {name: mnv2_random, package: mobilenetv2_100, pretrained: false}\n"


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    """A 192-image folder (3 classes; 114 train images < 1280 feature dims, so the H-score is K-1 = 2 for every
    model: a constant proxy) ranked once with a planted tie; later calls reuse its records or feature cache."""
    root = tmp_path_factory.mktemp("rank")
    folder = texture_folder(root / "my_domain")
    (root / "d.yaml").write_text(f"protocols:\n  linear: {{n_wd: 8}}\n"
                                 f"datasets:\n  - {{name: my_domain, folder: {folder}, resolution: 32}}\n")
    (root / "tie.yaml").write_text("models:\n" + MNV2 + COPY + RANDOM)
    (root / "clear.yaml").write_text("models:\n" + MNV2 + RANDOM)
    return root


def _rank(root, zoo, out, *extra):
    return main(["rank", "--zoo", str(root / zoo), "--datasets", str(root / "d.yaml"), "--dataset", "my_domain",
                 "--proxy", "linear,knn,hscore", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def tie(domain):
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = _rank(domain, "tie.yaml", domain / "tie")
    return code, buf.getvalue(), json.loads((domain / "tie/my_domain/rank.json").read_text())


def test_a_planted_tie_is_not_distinguishable_and_a_constant_proxy_is_left_out(domain, tie):
    code, out, dec = tie
    assert code == 0
    assert "Recommendation: mnv2, NOT distinguishable from the runner-up mnv2_copy." in out
    d = dec["decision"]
    assert d["winner"] == "mnv2" and d["runner_up"] == "mnv2_copy" and d["tied"]
    iv = d["interval"]  # the two models get the same test images right: every paired difference is 0
    assert iv["proxy"] == "linear" and iv["n_test"] == 48 and iv["diff"] == iv["lo"] == iv["hi"] == 0
    assert not d["distinguishable"] and d["not_distinguishable_from_winner"] == ["mnv2_copy"]
    # hscore = K - 1 for every model: flagged, out of the decision and of the agreement count
    assert dec["flags"]["hscore"].startswith("constant: 2 for every candidate (its best possible value)")
    assert "left out: hscore — constant" in out and "hscore.hscore (left out)" in out
    assert d["usable"] == ["linear", "knn"] and set(d["agreement"]["firsts"]) == {"linear", "knn"}
    table = pd.read_csv(domain / "tie/my_domain/rank.csv")
    assert list(table.model) == ["mnv2", "mnv2_copy", "mnv2_random"]  # ordered by the trusted proxy
    assert table["linear.top1"].iloc[0] == table["linear.top1"].iloc[1] > table["linear.top1"].iloc[2]


def test_records_land_under_out_and_the_default_out_is_named_not_cwd_results(domain, tie, monkeypatch, capsys):
    assert (domain / "tie/my_domain/mnv2_copy/linear__seed0.json").exists()
    assert "records, rank.csv and rank.json in" in tie[1] and str(domain / "tie/my_domain") in tie[1]
    monkeypatch.chdir(domain)
    assert main(["rank", "--zoo", "clear.yaml", "--datasets", "d.yaml", "--dataset", "my_domain", "--proxy", "knn",
                 "--cache-dir", str(domain / "tie/.cache")]) == 0
    assert (domain / "bench_rank/my_domain/mnv2/knn__seed0.json").exists()
    assert not (domain / "results").exists()
    assert "in bench_rank/my_domain/ (--out bench_rank)" in capsys.readouterr().out


def test_the_recommendation_names_the_clearly_best_model(domain, tie, capsys):
    """ImageNet weights against the same network at random init on real textures: 98 % against 71 % linear top-1."""
    assert _rank(domain, "clear.yaml", domain / "tie") == 0  # the tie run's records: only the decision is new
    out = capsys.readouterr().out
    assert "(0 cells computed, 6 reused)" in out
    assert "Recommendation: mnv2, distinguishable from the runner-up mnv2_random." in out
    d = json.loads((domain / "tie/my_domain/rank.json").read_text())["decision"]
    assert d["distinguishable"] and d["interval"]["lo"] > 0
    assert d["agreement"]["agree"] == ["linear", "knn"]


def test_the_trusted_proxy_comes_from_the_track_record_with_results(domain, tie, capsys):
    """Past records where knn orders the models as the fine-tune does and linear the reverse: knn is trusted."""
    past = domain / "past"
    for d in ("a", "b"):
        for i in range(5):
            for proto, v in {"finetune": 50 + i, "knn": 40 + i, "linear": 60 - i}.items():
                write_record(past / d / f"m{i}" / f"{proto}__seed0.json",
                             {"model": f"m{i}", "dataset": d, "protocol": proto, "seed": 0, "status": "ok",
                              "primary": "top1", "higher_is_better": True, "metrics": {"top1": float(v)}})
    assert _rank(domain, "clear.yaml", domain / "tie", "--results", str(past)) == 0
    out = capsys.readouterr().out
    assert "trusted proxy: knn.top1 (best track record on the past records: mean Kendall τ 1.00" in out
    assert "by knn.top1" in out
    assert _rank(domain, "clear.yaml", domain / "tie", "--results", str(domain / "nothing")) == 2
    assert "--results is read for the proxies' track record" in capsys.readouterr().err


def test_flags_and_paired_intervals_on_planted_scores():
    assert flag(pd.Series([2.0000000000000013, 2.0, 2.0000000000000004])).startswith("constant")
    best = pd.Series(1.0, index=list("abc"))
    assert flag(pd.Series([1.0, 0.9999999, 0.97], index=list("abc")), best).startswith("saturated: 2 candidates")
    assert flag(pd.Series([1.0, 0.98, 0.97], index=list("abc")), best) == ""  # one at the bound still decides
    assert flag(pd.Series([np.nan, np.nan])) == "no scores"
    # a paired difference of 30 points on 400 images: its interval is the normal one, diff ± 1.96 sd/sqrt(n)
    a, b = np.ones(400), np.r_[np.zeros(120), np.ones(280)]
    r = paired_difference(a, b, n_boot=4000)
    half = 1.96 * 100 * np.std(a - b) / np.sqrt(400)
    assert r["diff"] == pytest.approx(30) and r["distinguishable"]
    assert r["lo"] == pytest.approx(30 - half, abs=1.0) and r["hi"] == pytest.approx(30 + half, abs=1.0)
    # unpaired intervals of these two accuracies would overlap less than... the pairing is what removes shared
    # images: flipping the same 20 images in both leaves the difference unchanged
    assert paired_difference(np.r_[a[:380], np.zeros(20)], np.r_[b[:380], np.zeros(20)])["diff"] == pytest.approx(30)
    track = pd.Series({"logme": 0.8, "knn": 0.5, "linear": 0.1})
    assert choose_trusted(["linear", "knn"], track, ["linear", "knn"])[0] == "knn"
    assert "logme has a better one" in choose_trusted(["linear", "knn"], track, ["linear", "knn"])[1]
    assert choose_trusted(["knn", "linear"], None, ["knn", "linear"]) == ("linear", choose_trusted(
        ["linear"], None, ["linear"])[1])


def test_decide_leaves_flagged_proxies_out_and_says_when_the_test_images_disagree():
    from benchmark.report.decide import decide, describe
    scores = pd.DataFrame({"logme": [3.0, 2.0, 1.0], "linear": [80.0, 90.0, 70.0], "sfda": [1.0, 1.0, 1.0]},
                          index=["a", "b", "c"])
    flags = {"logme": "", "linear": "", "sfda": flag(scores.sfda, pd.Series(1.0, index=scores.index))}
    n = 200  # linear: b right on 20 more of 200 images than a, c wrong on 40 more
    correct = {"linear": {"a": np.r_[np.ones(160), np.zeros(40)], "b": np.r_[np.ones(180), np.zeros(20)],
                          "c": np.r_[np.ones(140), np.zeros(60)]}}
    assert all(len(v) == n for v in correct["linear"].values())
    d = decide(scores, {"logme": True, "linear": True, "sfda": True}, flags, "logme", correct)
    assert d["winner"] == "a" and d["runner_up"] == "b" and d["usable"] == ["logme", "linear"]
    assert d["interval"]["proxy"] == "linear" and d["interval"]["diff"] == pytest.approx(-10)
    assert d["interval"]["hi"] < 0 and d["agreement"]["agree"] == ["logme"]
    text = describe(d, "logme.logme", "test")
    assert text[0] == "Recommendation: a by logme.logme, but linear's test images favour the runner-up b."
    assert "  left out: sfda — constant: 1 for every candidate (its best possible value)" in text
    assert "agreement: 1 of 2 usable proxies put a first (logme); linear put b first" in text[-2]


def test_layers_all_ranks_model_layer_pairs_and_names_the_winners_layer(domain, tie, capsys):
    """`bench rank --layers all`: every (model, layer) pair is a candidate, the recommendation names one, each
    model's best layer by the trusted proxy is reported, and the per-image intervals at non-last layers come
    from refits whose top-1 equals the records'."""
    out_dir = domain / "layers"  # at 16 px: at 32 px three of mnv2's layers reach 100 % and saturate linear/kNN
    (domain / "d16.yaml").write_text((domain / "d.yaml").read_text().replace("resolution: 32", "resolution: 16"))
    assert main(["rank", "--zoo", str(domain / "clear.yaml"), "--datasets", str(domain / "d16.yaml"), "--dataset",
                 "my_domain", "--proxy", "linear,knn", "--layers", "all", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(out_dir / "my_domain/rank.csv")
    assert list(table.columns[:4]) == ["rank", "candidate", "model", "layer"]
    layers = {m: list(g.layer) for m, g in table.groupby("model")}
    assert set(layers) == {"mnv2", "mnv2_random"} and sorted(layers["mnv2"]) == sorted(layers["mnv2_random"])
    assert "last" in layers["mnv2"] and len(layers["mnv2"]) >= 4
    assert (table.candidate == table.model + "@" + table.layer).all()
    assert table["linear.top1"].is_monotonic_decreasing  # ordered by the trusted proxy
    dec = json.loads((out_dir / "my_domain/rank.json").read_text())
    assert dec["per_layer"] and dec["decision"]["winner"] == table.candidate.iloc[0]
    for m, g in table.groupby("model"):  # each model's best layer is its highest linear top-1 over its layers
        best = dec["best_layers"][m]
        assert best["score"] == g["linear.top1"].max() and best["layer"] in set(g.layer[g["linear.top1"] == best["score"]])
        assert best["last"] == float(g.loc[g.layer == "last", "linear.top1"].iloc[0])
    assert "no interval" not in out and table["linear 95% CI"].notna().all()  # refits at every layer matched
    w_model, w_layer = table.model.iloc[0], table.layer.iloc[0]
    assert w_model == "mnv2" and f"layer: probe or tune mnv2 at '{w_layer}'" in out
    assert "Best layer of each model by linear.top1: mnv2" in out
    assert (out_dir / "my_domain/mnv2" / ("linear__seed0.json" if w_layer == "last"
                                           else f"linear@{w_layer}__seed0.json")).exists()
