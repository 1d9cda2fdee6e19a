"""Per-layer features: the one-pass path against hand-written hooks, per-layer proxies against the proxies called on
those features, the cache (a later run reads every layer), records and names."""
import json

import numpy as np
import pytest
import timm
import torch

from benchmark.config import load_datasets, load_zoo
from benchmark.data.augment import EvalTransform
from benchmark.data.loader import StoredImages
from benchmark.errors import ConfigError
from benchmark.layers import LAST, available_layers, extract_layers, resolve_layers
from benchmark.proxies import get_proxy
from benchmark.records import iter_records, record_path
from benchmark.runner import GroupContext, RunOptions, RunSummary, cell_config, plan_cells, run_grid
from benchmark.features import FeatureCache
from benchmark.config import stable_hash


def _images(n=10, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8).numpy()
    return StoredImages(pixels, torch.arange(n) % 2, np.arange(n), EvalTransform(size, (0.5,) * 3, (0.25,) * 3))


def _hooked(module, blocks, images, reduce):
    """Reference: forward hooks on the named blocks, each output reduced by `reduce`, plus module(x)."""
    out = {n: [] for n in blocks}
    named = dict(module.named_modules())
    hooks = [named[n].register_forward_hook(lambda _m, _i, o, n=n: out[n].append(reduce(o))) for n in blocks]
    last = []
    with torch.no_grad():
        for x, _ in images.batches(4, "cpu"):
            last.append(module(x))
    for h in hooks:
        h.remove()
    return {**{n: torch.cat(v) for n, v in out.items()}, LAST: torch.cat(last)}


@pytest.mark.parametrize("token_pool", ["patch", "cls", "all"])
def test_vit_layers_equal_hooks(token_pool):
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, depth=4).eval()
    table = available_layers(vit, 32)
    assert [t.name for t in table] == ["blocks.0", "blocks.1", "blocks.2", "blocks.3", LAST]
    assert [t.dim for t in table] == [192] * 5
    images = _images()
    reduce = {"patch": lambda o: o[:, 1:].mean(1), "cls": lambda o: o[:, 0], "all": lambda o: o.mean(1)}[token_pool]
    ref = _hooked(vit, [f"blocks.{i}" for i in range(4)], images, reduce)
    got, labels, probs = extract_layers(vit, images, table, [t.name for t in table], batch_size=3,
                                        token_pool=token_pool)
    assert probs is None and torch.equal(labels, images.labels)
    assert list(got) == [t.name for t in table]
    for name in got:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-5)


def test_resnet_layers_equal_hooks_and_subset_by_index():
    torch.manual_seed(0)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=0).eval()
    table = available_layers(net, 32)
    names = ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert [t.name for t in table] == names + [LAST] and table[-1].dim == 512
    images = _images()
    ref = _hooked(net, names, images, lambda o: o.mean((2, 3)))
    got, _, _ = extract_layers(net, images, table, resolve_layers("all", table), batch_size=4)
    for name in names + [LAST]:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-5)
    # a subset (negative index from the end of the blocks) -> just those layers and 'last'
    sub, _, _ = extract_layers(net, images, table, resolve_layers([1, -2], table), batch_size=4)
    assert list(sub) == ["layer1", "layer3", LAST]
    torch.testing.assert_close(sub["layer3"], ref["layer3"], rtol=1e-5, atol=1e-5)


def test_torchvision_blocks_through_hooks():
    import torchvision
    net = torchvision.models.resnet18(num_classes=10)
    net.fc = torch.nn.Identity()
    net.eval()
    table = available_layers(net, 32)
    assert [(t.name, t.dim) for t in table] == [("layer1", 64), ("layer2", 128), ("layer3", 256), ("layer4", 512),
                                                (LAST, 512)]
    images = _images(6)
    ref = _hooked(net, ["layer2"], images, lambda o: o.mean((2, 3)))
    got, _, _ = extract_layers(net, images, table, ["layer2"], batch_size=4)
    torch.testing.assert_close(got["layer2"], ref["layer2"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[LAST], ref[LAST], rtol=1e-5, atol=1e-5)


def test_resolve_layers_names_and_errors():
    table = available_layers(timm.create_model("resnet10t", pretrained=False, num_classes=0), 32)
    assert resolve_layers([LAST, 0, "layer2"], table) == ["act1", "layer2", LAST]
    assert resolve_layers([-1], table) == ["layer4"]  # the last block, not the pooled 'last'
    with pytest.raises(ConfigError, match="out of range"):
        resolve_layers([5], table)
    with pytest.raises(ConfigError, match="layer4"):  # an unknown name lists the valid ones
        resolve_layers(["layer9"], table)


ZOO = """\
models:
  - name: tr
    timm: test_resnet
    pretrained: false
  - name: tv
    timm: test_vit
    pretrained: false
"""
DATA = """\
settings:
  protocols: [nc1, linear]
  batch_size: 64
  target: linear
  layers: {layers}
protocols:
  linear: {{n_wd: 3}}
datasets:
  - name: digits
    packaged: digits
    resolution: 32
    max_train_per_class: 8
    max_test_per_class: 4
"""


def _grid(tmp_path, layers):
    (tmp_path / "zoo.yaml").write_text(ZOO)
    (tmp_path / f"d_{len(layers)}.yaml").write_text(DATA.format(layers=layers))
    return load_zoo(tmp_path / "zoo.yaml"), load_datasets(tmp_path / f"d_{len(layers)}.yaml")


def test_grid_per_layer_records_proxies_and_cache(tmp_path):
    zoo, dsets = _grid(tmp_path, "all")
    opts = RunOptions(out=str(tmp_path / "r"), models=["tr"])
    cells = plan_cells(zoo, dsets, opts)
    layers = [c.layer for c in cells if c.protocol == "nc1"]
    assert layers == ["act1", "layer1", "layer2", "layer3", "layer4", LAST]
    first = run_grid(zoo, dsets, opts, log=lambda *_: None)
    assert first.ok == 12 and not first.errors
    assert first.features_computed == 3  # one pass per split wrote all six layers

    # the 'last' record keeps its old path and config hash: records made before layers existed stay valid
    _, plain = _grid(tmp_path, "[last]")
    last_cell = next(c for c in cells if c.layer == LAST and c.protocol == "nc1")
    rec = json.loads(record_path(opts.out, "tr", "digits", "nc1", 0).read_text())
    assert rec["layer"] == LAST and rec["config_hash"] == stable_hash(cell_config(zoo, plain, last_cell, rec["config"]
                                                                                   ["data_identity"]))
    path = record_path(opts.out, "tr", "digits", "linear", 0, "layer2")
    assert path.name == "linear@layer2__seed0.json"
    lin = json.loads(path.read_text())
    assert lin["layer"] == "layer2" and lin["layer_index"] == 2 and lin["config"]["layer"] == "layer2"
    assert {r["layer"] for _, r in iter_records(opts.out)} == set(layers)

    # per-layer proxies equal the proxies called on hand-hooked features of the same images
    ctx = GroupContext(zoo.models[0], dsets.datasets[0], dsets, opts, FeatureCache(tmp_path / "r" / ".cache"),
                       RunSummary(), {})
    module = ctx.loaded.module
    hooked = {s: _hooked(module, ["layer2"], ctx.images(s), lambda o: o.mean((2, 3))) for s in ("train", "val",
                                                                                                   "test")}
    ys = {s: ctx.images(s).labels for s in hooked}
    nc1 = get_proxy("nc1")(hooked["train"]["layer2"], ys["train"])
    rec_nc1 = json.loads(record_path(opts.out, "tr", "digits", "nc1", 0, "layer2").read_text())
    assert rec_nc1["metrics"]["nc1"] == pytest.approx(nc1["nc1"], rel=1e-4)
    ref = get_proxy("linear")(hooked["train"]["layer2"], ys["train"], hooked["test"]["layer2"], ys["test"],
                              val_x=hooked["val"]["layer2"], val_y=ys["val"], n_wd=3)
    assert lin["metrics"]["top1"] == pytest.approx(ref["top1"], abs=1e-6)

    # a later run asking for a subset with a new proxy reads every layer from the cache: no model, no forward
    _, subset = _grid(tmp_path, "[1, -1, last]")
    opts2 = RunOptions(out=str(tmp_path / "r"), models=["tr"], protocols=["nc1", "knn"])
    second = run_grid(zoo, subset, opts2, log=lambda *_: None)
    assert (second.features_computed, second.models_loaded, second.skipped, second.ok) == (0, 0, 3, 3)


def test_vit_grid_all_layers_one_pass(tmp_path):
    zoo, dsets = _grid(tmp_path, "[0, last]")
    opts = RunOptions(out=str(tmp_path / "r"), models=["tv"], protocols=["nc1"])
    summary = run_grid(zoo, dsets, opts, log=lambda *_: None)
    assert summary.ok == 2 and summary.features_computed == 1  # nc1 reads train only
    assert record_path(opts.out, "tv", "digits", "nc1", 0, "blocks.0").exists()


def test_ls_lists_a_models_layers(tmp_path, capsys):
    from benchmark.cli import main
    (tmp_path / "zoo.yaml").write_text(ZOO)
    assert main(["ls", "--zoo", str(tmp_path / "zoo.yaml"), "--models", "tr", "--resolution", "32"]) == 0
    out = capsys.readouterr().out
    assert "layers of tr" in out and "0: act1 [32], 1: layer1 [32]" in out and "5: last [96]" in out
    assert "layers of tv" not in out
    assert main(["ls", "--zoo", str(tmp_path / "zoo.yaml"), "--models", "nope"]) == 2
