import copy
import json

import pytest
import timm
import torch
from torch.utils.data import TensorDataset

import benchmark
from benchmark.config import load_datasets, load_zoo
from benchmark.errors import CellError
from benchmark.runner import RunOptions, run_grid
from benchmark.training import engine
from benchmark.training.bn import BN_TYPES, convert_bn, tuned_norm_layers
from benchmark.training.engine import fit, trained_fraction
from benchmark.training.protocols import PROTOCOLS, BuildContext
from benchmark.training.surgery import SkipConnected, blocks_of


def tiny_resnet():
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=0).eval()


def ctx_for(backbone, k=3):
    with torch.no_grad():
        dim = backbone.eval()(torch.zeros(1, 3, 32, 32)).shape[1]
    head = (torch.randn(k, dim) * 0.01, torch.zeros(k))
    batches = lambda: iter([torch.randn(8, 3, 32, 32) * 2 + 1 for _ in range(2)])  # noqa: E731
    return BuildContext(backbone, dim, k, 0, lambda: head, batches)


def one_combo(name, **over):
    proto = PROTOCOLS.get(name)
    return proto.combos({**proto.defaults, **over}, {}, 0)[0] if proto.staged else proto.combos(
        {**proto.defaults, **over})[0]


def toy_data(n=24, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % k)


def trained_names(setup):
    ids = {id(p) for grp in setup.param_groups for p in grp["params"]}
    return {n for n, p in setup.model.named_parameters() if id(p) in ids}


def test_convert_bn_keeps_eval_function_and_moves_statistics():
    m = tiny_resnet()
    with torch.no_grad():  # make source statistics differ from the target's
        for bn in m.modules():
            if isinstance(bn, BN_TYPES):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
                bn.weight.uniform_(0.5, 1.5)
    x = torch.randn(6, 3, 32, 32)
    before = m(x)
    target = [torch.randn(16, 3, 32, 32) * 3 + 2 for _ in range(3)]
    out = benchmark.convert_bn(m, target)
    assert out is m
    assert torch.allclose(m(x), before, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the stem BN now holds the target's average per-batch statistics
        h = [m.conv1(t) for t in target]
    mean = torch.stack([t.mean((0, 2, 3)) for t in h]).mean(0)
    var = torch.stack([t.var((0, 2, 3), unbiased=True) for t in h]).mean(0)
    assert torch.allclose(m.bn1.running_mean, mean, atol=1e-4) and torch.allclose(m.bn1.running_var, var, rtol=1e-4)


def test_paper_bn_layers_are_016_percent_of_resnet50():
    r50 = timm.create_model("resnet50", pretrained=False, num_classes=0)
    setup = PROTOCOLS.get("bn_tune").build(ctx_for(r50, 10), one_combo("bn_tune", bn_layers="paper"))
    frac = trained_fraction(setup)
    assert frac["trained_backbone_params"] == 37_888
    assert frac["trained_fraction_backbone"] == pytest.approx(0.0016, abs=5e-5)


@pytest.mark.parametrize("name,expect", [
    ("linear_aug", lambda n: n.startswith("head.")),
    ("finetune", lambda n: True),
    ("lp_ft", lambda n: True),
    ("daft", lambda n: True),
    ("bn_tune", lambda n: n.startswith("head.") or ".bn" in n or "downsample.1" in n or n.startswith("backbone.bn1")),
    ("layer_ft", lambda n: n.startswith("head.") or n.startswith("backbone.layer3.0.")),
    ("scl_ft", lambda n: n.startswith("head.") or n.startswith("backbone.layer3.0.")),
])
def test_parameter_groups_gradients_and_modes(name, expect):
    backbone = tiny_resnet()
    setup = PROTOCOLS.get(name).build(ctx_for(backbone), one_combo(name))
    names = {n for n, _ in setup.model.named_parameters()}
    declared = trained_names(setup)
    assert declared == {n for n in names if expect(n)}
    engine.freeze_all_but(setup)
    model = setup.model.train()
    setup.set_modes(model)
    bn_train = {n for n, m in model.named_modules() if isinstance(m, BN_TYPES) and m.training}
    all_bn = {n for n, m in model.named_modules() if isinstance(m, BN_TYPES)}
    expected_bn = {"linear_aug": set(), "lp_ft": set(), "finetune": all_bn, "daft": all_bn,
                   "bn_tune": all_bn,
                   "layer_ft": {n for n in all_bn if n.startswith("backbone.layer3.0.")},
                   "scl_ft": {n for n in all_bn if n.startswith("backbone.layer3.0.")}}[name]
    assert bn_train == expected_bn
    before = copy.deepcopy(model.state_dict())
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    got_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert got_grad == declared
    frozen_stats = [n for n in before if n.endswith("running_mean") and n.rsplit(".", 1)[0] not in bn_train]
    assert all(torch.equal(before[n], model.state_dict()[n]) for n in frozen_stats)
    moved = [n for n in before if n.endswith("running_mean") and n.rsplit(".", 1)[0] in bn_train]
    assert all(not torch.equal(before[n], model.state_dict()[n]) for n in moved)


def test_bn_tune_paper_mode_excludes_block_bn1_and_downsample():
    layers, note = tuned_norm_layers(tiny_resnet(), "paper")
    assert "paper" in note and len(layers) == 1 + 8  # stem + bn2 of each of ResNet-18's 8 basic blocks
    with pytest.raises(CellError, match="defined for ResNets"):
        tuned_norm_layers(timm.create_model("mobilenetv2_100", num_classes=0), "paper")


def test_scl_ft_shapes_on_resnet_and_vit():
    r = tiny_resnet()
    setup = PROTOCOLS.get("scl_ft").build(ctx_for(r, 5), one_combo("scl_ft"))
    assert isinstance(setup.model, SkipConnected)
    x = torch.randn(2, 3, 32, 32)
    assert setup.model(x).shape == (2, 5) and setup.model.features(x).shape == (2, 512)
    assert setup.model.skip(512)[:, 256:].abs().sum() == 0  # layer3 is 256 wide: zero-padded to 512
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8)
    blocks, family, default = blocks_of(vit)
    assert (family, default, len(blocks)) == ("vit", 8, 12)
    vs = PROTOCOLS.get("scl_ft").build(ctx_for(vit.eval(), 4), one_combo("scl_ft"))
    assert vs.model(x).shape == (2, 4) and vs.model.skip(192).shape == (2, 192)
    assert blocks_of(timm.create_model("resnet50", num_classes=0))[2] == 8 and blocks_of(r)[2] == 5
    with pytest.raises(CellError, match="support timm ResNets and ViTs"):
        blocks_of(timm.create_model("mobilenetv2_100", num_classes=0))


def test_fit_resumes_after_a_kill_to_the_same_result(tmp_path):
    def setup():
        return PROTOCOLS.get("finetune").build(ctx_for(tiny_resnet()), one_combo("finetune", lr=0.01, wd=0.0))
    data, val = toy_data(), toy_data(9, seed=1)
    full = setup()
    ref = fit(full, data, val, epochs=3, batch_size=8, seed=0)

    def die(msg):
        if "epoch 1/" in msg:
            raise KeyboardInterrupt
    killed = setup()
    with pytest.raises(KeyboardInterrupt):
        fit(killed, data, val, epochs=3, batch_size=8, seed=0, ckpt=tmp_path / "c.pt", log=die)
    assert (tmp_path / "c.pt").exists()
    resumed = setup()
    out = fit(resumed, data, val, epochs=3, batch_size=8, seed=0, ckpt=tmp_path / "c.pt")
    assert out["val_curve"] == ref["val_curve"]
    for (n, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), n


GRID_ZOO = """\
models:
  - {name: mnv2, package: mobilenetv2_100}
  - {name: mnv2_random, package: mobilenetv2_100, pretrained: false}
"""
GRID_DATA = """\
settings:
  protocols: [finetune]
  batch_size: 32
  target: finetune
protocols:
  finetune: {epochs: 3, lr: [0.01, 0.003], wd: [0.0], batch_size: 32}
datasets:
  - {name: textures, packaged: textures, resolution: 64, extra_test: [textures_again]}
  - {name: textures_again, packaged: textures, resolution: 64, split_seed: 1}
"""


def test_pretrained_finetune_beats_random_init_and_sweep_resumes(tmp_path, monkeypatch):
    (tmp_path / "z.yaml").write_text(GRID_ZOO)
    (tmp_path / "d.yaml").write_text(GRID_DATA)
    zoo, dsets = load_zoo(tmp_path / "z.yaml"), load_datasets(tmp_path / "d.yaml")
    from benchmark.training import runner as truntime
    calls = []
    real_fit = truntime.fit

    def flaky_fit(*a, **k):
        calls.append(k["batch_size"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during the second sweep point
        return real_fit(*a, **k)
    monkeypatch.setattr(truntime, "fit", flaky_fit)
    opts = RunOptions(out=str(tmp_path / "r"), datasets=["textures"], models=["mnv2"])
    with pytest.raises(KeyboardInterrupt):
        run_grid(zoo, dsets, opts, log=lambda *_: None)
    assert not (tmp_path / "r/textures/mnv2/finetune__seed0.json").exists()  # written only when finished
    calls.clear()
    run_grid(zoo, dsets, opts, log=lambda *_: None)
    assert len(calls) == 1  # the first sweep point was not retrained
    monkeypatch.setattr(truntime, "fit", real_fit)
    run_grid(zoo, dsets, RunOptions(out=str(tmp_path / "r"), datasets=["textures"]), log=lambda *_: None)
    pre = json.loads((tmp_path / "r/textures/mnv2/finetune__seed0.json").read_text())
    rnd = json.loads((tmp_path / "r/textures/mnv2_random/finetune__seed0.json").read_text())
    assert pre["status"] == rnd["status"] == "ok"
    assert pre["metrics"]["top1"] > rnd["metrics"]["top1"] + 10
    assert "ood_textures_again_top1" in pre["metrics"]
    assert len(pre["training"]["sweep"]) == 2 and pre["hyperparameters"]["lr"] in (0.01, 0.003)
    assert pre["training"]["trained_fraction_backbone"] == 1.0
    diag = pre["diagnostics"]
    assert 0 < diag["feature_distortion"]["cosine_similarity"] < 1 and diag["nc1_trained_train"] > 0
    assert set(diag["parameter_change"]["per_stage"]) >= {"conv_stem", "blocks.0", "bn2"}
    assert not (tmp_path / "r/textures/mnv2/finetune__seed0.ckpt").exists()


def test_out_of_memory_halves_the_batch_and_the_record_says_so(tmp_path, monkeypatch):
    (tmp_path / "z.yaml").write_text("models:\n  - {name: r18, timm: resnet18, pretrained: false}\n")
    (tmp_path / "d.yaml").write_text("settings: {protocols: [linear_aug], target: linear_aug}\n"
                                     "protocols:\n  linear_aug: {epochs: 1, batch_size: 32}\n"
                                     "datasets:\n  - {name: textures, packaged: textures, resolution: 32}\n")
    from benchmark.training import runner as truntime
    real_fit, seen = truntime.fit, []

    def oom_once(*a, **k):
        seen.append(k["batch_size"])
        if len(seen) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_fit(*a, **k)
    monkeypatch.setattr(truntime, "fit", oom_once)
    s = run_grid(load_zoo(tmp_path / "z.yaml"), load_datasets(tmp_path / "d.yaml"),
                 RunOptions(out=str(tmp_path / "r")), log=lambda *_: None)
    assert s.ok == 1 and seen == [32, 16]
    rec = json.loads((tmp_path / "r/textures/r18/linear_aug__seed0.json").read_text())
    assert rec["training"]["batch_size"] == 16
    assert "out of memory: batch size halved to 16" in rec["training"]["notes"]


def test_lp_ft_reuses_the_linear_head_and_the_folded_head_is_exact(tmp_path, monkeypatch):
    from benchmark.proxies import linear as lin
    x = torch.randn(60, 8) * 3 + 1
    y = torch.arange(60) % 3
    mean, std = x.mean(0), x.std(0)
    W, b = lin.fit_logreg((x - mean) / std, y, 3, 1.0)
    Wr, br = lin.raw_head((W, b), mean, std)
    assert torch.allclose(x @ Wr.T + br, ((x - mean) / std) @ W.T + b, atol=1e-4)

    (tmp_path / "z.yaml").write_text("models:\n  - {name: mnv2, package: mobilenetv2_100}\n")
    (tmp_path / "d.yaml").write_text("settings: {protocols: [linear, lp_ft], target: lp_ft}\n"
                                     "protocols:\n  linear: {n_wd: 3}\n  lp_ft: {epochs: 1, lr: [0.001]}\n"
                                     "datasets:\n  - {name: textures, packaged: textures, resolution: 32}\n")
    zoo, dsets = load_zoo(tmp_path / "z.yaml"), load_datasets(tmp_path / "d.yaml")
    run_grid(zoo, dsets, RunOptions(out=str(tmp_path / "r"), protocols=["linear"]), log=lambda *_: None)
    solved = []
    real = lin.fit_logreg
    monkeypatch.setattr(lin, "fit_logreg", lambda *a, **k: solved.append(1) or real(*a, **k))
    s = run_grid(zoo, dsets, RunOptions(out=str(tmp_path / "r"), protocols=["lp_ft"]), log=lambda *_: None)
    assert s.ok == 1 and solved == []  # the head came from disk, not from a new solve
    rec = json.loads((tmp_path / "r/textures/mnv2/lp_ft__seed0.json").read_text())
    assert "linear probe" in " ".join(rec["training"]["notes"])

    # Before any training, LP-FT's network is the linear probe: same validation accuracy on images.
    from benchmark.features import FeatureCache
    from benchmark.runner import GroupContext, RunSummary
    from benchmark.training.engine import evaluate
    ctx = GroupContext(zoo.models[0], dsets.datasets[0], dsets, RunOptions(out=str(tmp_path / "r")),
                       FeatureCache(tmp_path / "r" / ".cache"), RunSummary(), {})
    src, plan = ctx.source()
    val = ctx.images("val")  # the real path: stored pixels, eval transform on the device
    bctx = BuildContext(ctx.loaded.module, 1280, 3, 0, lambda: ctx.linear_head(0), None)
    setup = PROTOCOLS.get("lp_ft").build(bctx, one_combo("lp_ft"))
    probe = json.loads((tmp_path / "r/textures/mnv2/linear__seed0.json").read_text())
    assert abs(evaluate(setup.model, val, 64, "cpu")["top1"] - probe["metrics"]["val_top1"]) <= 100 / len(val) + 1e-9
    assert solved == []


def test_convert_bn_refuses_non_affine_bn_before_touching_any_layer():
    m = tiny_resnet()
    m.layer4[1].bn2 = torch.nn.BatchNorm2d(512, affine=False).eval()
    before = copy.deepcopy(m.state_dict())
    with pytest.raises(CellError, match="needs affine BatchNorm"):
        convert_bn(m, [torch.randn(4, 3, 32, 32)])
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("arch", ["resnet18", "vit_tiny_patch16_224"])
def test_finetune_decays_weights_only_as_timm_does(arch):
    """Default wd_norm_bias false: the weight decay of each parameter equals the one timm's own optimizer factory
    gives it (create_optimizer_v2 on the same backbone: norm affines, biases and ViT pos_embed/cls_token at 0);
    the head's weight is decayed and its bias is not. wd_norm_bias true: every parameter decayed."""
    import timm.optim
    torch.manual_seed(0)
    kw = {"img_size": 32} if arch.startswith("vit") else {}
    backbone = timm.create_model(arch, pretrained=False, num_classes=0, **kw).eval()
    setup = PROTOCOLS.get("finetune").build(ctx_for(backbone), one_combo("finetune", lr=0.01, wd=1e-4))
    opt = torch.optim.SGD(setup.param_groups, momentum=0.9)  # as engine.fit builds it
    ours = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    ref_opt = timm.optim.create_optimizer_v2(setup.model.backbone, "momentum", lr=0.01, weight_decay=1e-4)
    ref = {id(p): g["weight_decay"] for g in ref_opt.param_groups for p in g["params"]}
    head = setup.model.head
    ref.update({id(head.weight): 1e-4, id(head.bias): 0.0})
    assert ours == ref and len(ours) == len(list(setup.model.parameters()))
    assert 0 < sum(wd == 0 for wd in ours.values()) < len(ours)
    if arch.startswith("vit"):
        assert ours[id(setup.model.backbone.pos_embed)] == 0.0
    every = PROTOCOLS.get("finetune").build(ctx_for(backbone), one_combo("finetune", lr=0.01, wd=1e-4,
                                                                          wd_norm_bias=True))
    assert [g["weight_decay"] for g in every.param_groups] == [1e-4]
