"""Feature splits: extracted once across concurrent runs (a claim per feature key), and records computed from
cached features still name the model's weights exactly (issue 20: 17 extractions where 12 were needed; 3-6 of 20
records without model_identity)."""
import json
import threading
import time

import pytest
import torch

from benchmark import runner
from benchmark.features import FeatureCache
from benchmark.runner import GroupContext, RunOptions, RunSummary, run_grid



pytestmark = pytest.mark.usefixtures("one_thread")


def test_records_from_cached_features_carry_the_model_identity(tiny_knn_grid):
    zoo, dsets, out = tiny_knn_grid
    run_grid(zoo, dsets, RunOptions(out=str(out), protocols=["knn"]), log=lambda *_: None)
    s = run_grid(zoo, dsets, RunOptions(out=str(out), protocols=["nc1"]), log=lambda *_: None)
    assert (s.ok, s.models_loaded, s.features_computed) == (1, 0, 0)  # the model was never loaded here
    knn = json.loads((out / "digits/r/knn__seed0.json").read_text())
    nc1 = json.loads((out / "digits/r/nc1__seed0.json").read_text())
    assert knn["model_identity"]["source"] == "timm" and nc1["model_identity"] == knn["model_identity"]
    assert nc1["model_notes"] == knn["model_notes"]

    for side in (out / ".cache").glob("*.model"):  # a cache written before identities were stored beside it
        side.unlink()
    s = run_grid(zoo, dsets, RunOptions(out=str(out), protocols=["nc1"], force=True), log=lambda *_: None)
    assert s.features_computed == 0 and s.models_loaded == 1  # loaded once for its identity, not re-extracted
    assert json.loads((out / "digits/r/nc1__seed0.json").read_text())["model_identity"] == knn["model_identity"]


def test_concurrent_contexts_extract_a_split_once(tiny_knn_grid, monkeypatch):
    zoo, dsets, out = tiny_knn_grid
    calls, real = [], runner.extract

    def slow_extract(*a, **k):  # long enough that the second reader arrives while the first extracts
        calls.append(threading.get_ident())
        time.sleep(0.5)
        return real(*a, **k)
    monkeypatch.setattr(runner, "extract", slow_extract)
    opts = RunOptions(out=str(out))
    barrier, results, logs = threading.Barrier(2), {}, []

    def reader(i):
        ctx = GroupContext(zoo.models[0], dsets.datasets[0], dsets, opts, FeatureCache(out / ".cache"),
                           RunSummary(), {}, log=logs.append)
        ctx.source()
        barrier.wait()
        results[i] = (ctx.features("train"), ctx.summary.features_computed, ctx.summary.features_cached)
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(calls) == 1, calls
    assert sorted((c, h) for _, c, h in results.values()) == [(0, 1), (1, 0)]  # one extracted, one read it
    (fa, la), (fb, lb) = results[0][0], results[1][0]
    assert torch.equal(fa, fb) and torch.equal(la, lb)
    assert any("waiting for" in m for m in logs) and not list((out / ".cache").glob("*.lock"))
