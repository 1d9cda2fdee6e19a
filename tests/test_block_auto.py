"""`block: auto` for Layer-FT / SCL-FT: a planted network whose third block alone removes the within-class noise."""
import pytest
import torch
from torch import nn

from benchmark.errors import ConfigError
from benchmark.protocols import check_hp
from benchmark.proxies import get_proxy
from benchmark.training.block_choice import block_features, choose_block


class Mix(nn.Module):
    """Residual token block h + h Aᵀ (A fixed): adds one channel into another."""

    def __init__(self, src=None, dst=None, weight=0.0):
        super().__init__()
        self.A = torch.zeros(3, 3)
        if src is not None:
            self.A[dst, src] = weight

    def forward(self, h):
        return h + h @ self.A.T


class PlantedViT(nn.Module):
    """ViT-shaped (cls_token + blocks, as surgery.blocks_of expects). Channel 0 of every pixel is class + noise a,
    channel 1 is the same noise a, channel 2 independent noise b. Block 3 subtracts channel 1 from channel 0 (the
    class alone: NC1 ~ 0); blocks 4-5 add b back into channel 0 (NC1 rises again); blocks 1-2 do nothing."""

    def __init__(self, planted=3, depth=5):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 3))
        self.num_prefix_tokens = 1
        self.blocks = nn.Sequential(*[Mix(1, 0, -1.0) if k == planted else Mix(2, 0, 1.0) if k > planted else Mix()
                                      for k in range(1, depth + 1)])

    def forward(self, x):
        tokens = x.flatten(2).transpose(1, 2)  # [B, HW, 3]
        h = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], 1)
        return self.blocks(h)[:, 1:].mean(1)


def _batches(n_per_class=30, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(k).repeat_interleave(n_per_class)
    # each class's noise is +v and -v (zero class means): the class means differ in channel 0 only
    a, b = (torch.randn(k, n_per_class // 2, generator=g) * 2.0 for _ in range(2))
    a, b = (torch.cat([t, -t], 1).flatten() for t in (a, b))
    x = torch.stack([y.float() + a, a, b], 1)[:, :, None, None].expand(-1, -1, 4, 4).contiguous()
    return [(x[i:i + 16], y[i:i + 16]) for i in range(0, len(y), 16)]


def test_auto_picks_the_block_that_separates_the_classes():
    net = PlantedViT(planted=3)
    feats, labels = block_features(net, _batches(), "cpu")
    nc1 = [get_proxy("nc1")(f, labels)["nc1"] for f in feats]
    choice = choose_block(net, _batches(), "nc1")
    assert choice["block"] == 3 and nc1[2] < 1e-6 < min(nc1[:2] + nc1[3:])
    assert choice["scores"] == pytest.approx(dict(enumerate(nc1, start=1)), rel=1e-6)
    assert "lowest nc1" in choice["reason"] and choice["proxy"] == "nc1"
    assert choose_block(PlantedViT(planted=2), _batches(), "nc1")["block"] == 2


def test_block_settings_are_checked():
    check_hp("layer_ft", {"block": "auto", "block_proxy": "cdnv"}, "d.yaml: protocols.layer_ft")
    check_hp("scl_ft", {"block": 4}, "d.yaml: protocols.scl_ft")
    with pytest.raises(ConfigError, match="block"):
        check_hp("layer_ft", {"block": "middle"}, "d.yaml: protocols.layer_ft")
    with pytest.raises(ConfigError, match="block_proxy"):
        check_hp("layer_ft", {"block": "auto", "block_proxy": "linear"}, "d.yaml: protocols.layer_ft")


def test_layer_nc1_diagnostic_equals_nc1_per_block():
    from benchmark.training.block_choice import layer_nc1
    net = PlantedViT(planted=3)
    out = layer_nc1(net, PlantedViT(planted=2), _batches(), "cpu")
    feats, labels = block_features(net, _batches(), "cpu")
    assert out["trained"] == pytest.approx([get_proxy("nc1")(f, labels)["nc1"] for f in feats], rel=1e-6)
    assert out["pretrained"][1] < 1e-6 and out["n_images"] == 90


def test_layer_ft_auto_cell_records_its_choice(tmp_path):
    import json
    from benchmark.config import load_datasets, load_zoo
    from benchmark.runner import RunOptions, run_grid
    (tmp_path / "zoo.yaml").write_text("models:\n  - name: tv\n    timm: test_vit\n    pretrained: false\n")
    (tmp_path / "d.yaml").write_text("""\
settings: {protocols: [layer_ft], batch_size: 32, target: layer_ft}
protocols:
  layer_ft: {block: auto, epochs: 1, lr: 0.01, batch_size: 16, diagnostics: [layer_nc1]}
datasets:
  - {name: digits, packaged: digits, resolution: 32, max_train_per_class: 4, max_test_per_class: 2}
""")
    out = tmp_path / "r"
    s = run_grid(load_zoo(tmp_path / "zoo.yaml"), load_datasets(tmp_path / "d.yaml"), RunOptions(out=str(out)),
                 log=lambda *_: None)
    assert s.ok == 1, s.errors
    rec = json.loads((out / "digits" / "tv" / "layer_ft__seed0.json").read_text())
    choice = rec["block_choice"]
    scores = {int(k): v for k, v in choice["scores"].items()}
    assert choice["block"] == min(scores, key=scores.get) and rec["hyperparameters"]["block"] == choice["block"]
    assert f"trained block {choice['block']} of 6" in " ".join(rec["training"]["notes"])
    nc1 = rec["diagnostics"]["layer_nc1"]
    assert len(nc1["trained"]) == 6 and nc1["pretrained"] == pytest.approx(list(scores.values()), rel=1e-4)


def test_layer_ft_block_sweep_feeds_the_reports_block_choice_table(tmp_path):
    """A Layer-FT cell sweeping `block` records the block of every sweep point (0 resolved to the default) and
    which layer names each block's output is; `bench report` on it and per-layer proxy records writes
    layers_block_choice.csv with each proxy's pick mapped to a block."""
    import json
    import pandas as pd
    from benchmark.cli import main
    (tmp_path / "zoo.yaml").write_text("models:\n  - name: r10\n    timm: resnet10t\n    pretrained: false\n")
    (tmp_path / "d.yaml").write_text("""\
settings: {protocols: [nc1, knn, layer_ft], batch_size: 32, target: layer_ft, layers: all}
protocols:
  layer_ft: {block: [0, 1, 2, 4], epochs: 1, lr: 0.01, batch_size: 16}
datasets:
  - {name: digits, packaged: digits, resolution: 32, max_train_per_class: 4, max_test_per_class: 2}
""")
    out = tmp_path / "r"
    assert main(["run", "--zoo", str(tmp_path / "zoo.yaml"), "--datasets", str(tmp_path / "d.yaml"),
                 "--out", str(out)]) == 0
    rec = json.loads((out / "digits" / "r10" / "layer_ft__seed0.json").read_text())
    assert rec["training"]["block_layers"] == [["layer1.0", "layer1"], ["layer2.0", "layer2"],
                                               ["layer3.0", "layer3"], ["layer4.0", "layer4"]]
    assert sorted(p["hp"]["block"] for p in rec["training"]["sweep"]) == [1, 2, 3, 4]  # 0: the default, block 3
    assert main(["report", "--results", str(out), "--out", str(tmp_path / "rep"), "--target", "layer_ft",
                 "--no-figures"]) == 0
    table = pd.read_csv(tmp_path / "rep" / "layers_block_choice.csv")
    assert set(table.proxy) == {"nc1", "knn"} and (table.blocks_swept == 4).all()
    best = pd.read_csv(tmp_path / "rep" / "layers_best.csv").set_index("proxy")
    for r in table.itertuples():
        layer = best.loc[r.proxy, "best_layer"]
        expect = {"layer1": 1, "layer2": 2, "layer3": 3, "layer4": 4, "last": 4}.get(layer)
        assert (pd.isna(r.proxy_block) and expect is None) or r.proxy_block == expect
    assert "Each proxy's best layer as the block to tune" in (tmp_path / "rep" / "README.md").read_text()
