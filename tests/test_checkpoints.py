"""Checkpoint files as SSL authors' training scripts write them, in small: the same key structure, prefixes, extra
branches and pickled objects as the authors' save code (MoCo v2/v3 `main_moco.py`, DINO `main_dino.py`, SwAV
`main_swav.py`, Barlow Twins `main.py`, VICReg `main_vicreg.py`, MAE `util/misc.save_model`, DINOv2
`train.do_test`), with tiny timm networks in place of ResNet-50 / ViT-B. Every loaded tensor must equal the branch
the authors evaluate."""
import argparse
import contextlib
import os
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import ModelEntry
from benchmark.errors import CellError
from benchmark.models import load_model

TINY_VIT = dict(depth=1, embed_dim=48, num_heads=2)


def randomised(sd: dict, seed: int) -> dict:
    """Distinct values per branch, so loading the wrong branch cannot pass."""
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()) for k, v in sd.items()}


def no_fc(sd: dict) -> dict:
    """The evaluated backbone: everything but the projection MLP the authors put in `fc`."""
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


def with_prefix(prefix: str, sd: dict) -> dict:
    return {prefix + k: v for k, v in sd.items()}


def resnet_sd(seed, fc=None) -> dict:
    """A torchvision-style ResNet state dict (timm's test_resnet, same naming as resnet50) with its `fc`."""
    m = timm.create_model("test_resnet", num_classes=128)
    if fc is not None:
        m.fc = fc
    return randomised(m.state_dict(), seed)


def mlp(*dims) -> nn.Sequential:
    """MoCo v2's projection MLP: Linear, ReLU, Linear."""
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def moco_v3_mlp(num_layers, input_dim, mlp_dim, output_dim, last_bn=True) -> nn.Sequential:
    """MoCo v3 `_build_mlp`: bias-free Linear + BN + ReLU, the last BN without affine parameters."""
    layers = []
    for i in range(num_layers):
        d1, d2 = input_dim if i == 0 else mlp_dim, output_dim if i == num_layers - 1 else mlp_dim
        layers.append(nn.Linear(d1, d2, bias=False))
        if i < num_layers - 1:
            layers += [nn.BatchNorm1d(d2), nn.ReLU()]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d2, affine=False))
    return nn.Sequential(*layers)


@contextlib.contextmanager
def main_function(name):
    """A function that pickles as `__main__.<name>` and cannot be found again at load time, like VICReg's
    `exclude_bias_and_norm` (defined in the training script)."""
    def fn(p):
        return p.ndim == 1
    fn.__module__, fn.__qualname__, fn.__name__ = "__main__", name, name
    setattr(sys.modules["__main__"], name, fn)
    try:
        yield fn
    finally:
        delattr(sys.modules["__main__"], name)


def optimizer_state(params: dict, **group) -> dict:
    return {"state": {0: {"momentum_buffer": torch.zeros(3)}}, "param_groups": [{"lr": 0.1, "params": [0], **group}]}


# Each layout: (object as torch.save'd by the authors, entry keys, the evaluated branch, its key prefix)
def moco_v2():
    q, k = resnet_sd(1, mlp(96, 96, 128)), resnet_sd(2, mlp(96, 96, 128))
    sd = {**with_prefix("module.encoder_q.", q), **with_prefix("module.encoder_k.", k),
          "module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    obj = {"epoch": 800, "arch": "resnet50", "state_dict": sd, "optimizer": optimizer_state(sd)}
    return obj, dict(state_dict_key="state_dict", keep_prefix=["module.encoder_q."], drop=[r"^fc\."]), no_fc(q), ""


def moco_v3():
    b, m = resnet_sd(1, moco_v3_mlp(2, 96, 64, 32)), resnet_sd(2, moco_v3_mlp(2, 96, 64, 32))
    pred = randomised(moco_v3_mlp(2, 32, 64, 32, last_bn=False).state_dict(), 3)
    sd = {**with_prefix("module.base_encoder.", b), **with_prefix("module.momentum_encoder.", m),
          **with_prefix("module.predictor.", pred)}
    obj = {"epoch": 1000, "arch": "resnet50", "state_dict": sd, "optimizer": optimizer_state(sd),
           "scaler": {"scale": 65536.0, "_growth_tracker": 0}}
    return obj, dict(keep_prefix=["module.base_encoder."], drop=[r"^fc\."]), no_fc(b), ""


def swav():
    enc = resnet_sd(1)
    enc = {k: v for k, v in enc.items() if not k.startswith("fc.")}
    heads = {"projection_head.0.weight": torch.randn(64, 96), "projection_head.0.bias": torch.randn(64),
             "projection_head.1.weight": torch.randn(64), "projection_head.1.bias": torch.randn(64),
             "projection_head.1.running_mean": torch.randn(64), "projection_head.1.running_var": torch.rand(64),
             "projection_head.1.num_batches_tracked": torch.tensor(5), "projection_head.3.weight": torch.randn(32, 64),
             "projection_head.3.bias": torch.randn(32), "prototypes.weight": torch.randn(300, 32)}
    sd = with_prefix("module.", {**enc, **heads})
    return ({"epoch": 800, "state_dict": sd, "optimizer": optimizer_state(sd)},
            dict(keep_prefix=["module."], drop=[r"^projection_head\.", r"^prototypes\."]), enc, "")


def barlow_twins():
    bb = {k: v for k, v in resnet_sd(1).items() if not k.startswith("fc.")}  # backbone.fc = Identity
    proj = randomised(moco_v3_mlp(2, 96, 64, 64, last_bn=False).state_dict(), 2)  # Linear, BN, ReLU, Linear
    bn = randomised(nn.BatchNorm1d(64, affine=False).state_dict(), 3)
    sd = {**with_prefix("module.backbone.", bb), **with_prefix("module.projector.", proj),
          **with_prefix("module.bn.", bn)}
    return ({"epoch": 1000, "model": sd, "optimizer": optimizer_state(sd, weight_decay_filter=True)},
            dict(keep_prefix=["module.backbone."]), bb, "")


def vicreg(fn):
    bb = {k: v for k, v in resnet_sd(1).items() if not k.startswith("fc.")}
    proj = randomised(moco_v3_mlp(2, 96, 64, 64, last_bn=False).state_dict(), 2)
    proj["0.bias"] = torch.randn(64)  # VICReg's Projector: hidden Linear layers keep their bias
    sd = {**with_prefix("module.backbone.", bb), **with_prefix("module.projector.", proj)}
    opt = optimizer_state(sd, weight_decay_filter=fn, lars_adaptation_filter=fn)
    return {"epoch": 100, "model": sd, "optimizer": opt}, dict(keep_prefix=["module.backbone."]), bb, ""


def dino_vit():
    def vit_and_head(seed):
        vit = randomised(timm.create_model("test_vit", num_classes=0).state_dict(), seed)
        head = {"mlp.0.weight": torch.randn(64, 64), "mlp.0.bias": torch.randn(64), "mlp.2.weight":
                torch.randn(64, 64), "mlp.2.bias": torch.randn(64), "last_layer.weight_g": torch.ones(256, 1),
                "last_layer.weight_v": torch.randn(256, 64)}  # DINOHead(nlayers=2, bottleneck_dim=64)
        return {**with_prefix("backbone.", vit), **with_prefix("head.", head)}, vit
    student, _ = vit_and_head(1)
    teacher, vit = vit_and_head(2)
    args = argparse.Namespace(arch="vit_small", patch_size=16, out_dim=65536)
    obj = {"student": with_prefix("module.", student), "teacher": teacher, "optimizer": optimizer_state(student),
           "epoch": 100, "args": args, "dino_loss": {"center": torch.randn(1, 256)},
           "fp16_scaler": {"scale": 1024.0}}
    return obj, dict(keep_prefix=["backbone."]), vit, ""


def mae_pretrain():
    enc = randomised(timm.create_model("vit_base_patch16_224", num_classes=0, **TINY_VIT).state_dict(), 1)
    dec = {"mask_token": torch.randn(1, 1, 32), "decoder_embed.weight": torch.randn(32, 48),
           "decoder_embed.bias": torch.randn(32), "decoder_pos_embed": torch.randn(1, 197, 32),
           "decoder_blocks.0.norm1.weight": torch.randn(32), "decoder_norm.weight": torch.randn(32),
           "decoder_pred.weight": torch.randn(768, 32)}
    obj = {"model": {**enc, **dec}, "optimizer": optimizer_state(enc), "epoch": 799, "scaler": {"scale": 1.0},
           "args": argparse.Namespace(model="mae_vit_base_patch16", norm_pix_loss=True)}
    return obj, dict(drop=[r"^decoder_", r"^mask_token$"], timm_kwargs=TINY_VIT), enc, ""


LAYOUTS = {"moco_v2": ("test_resnet", moco_v2), "moco_v3": ("test_resnet", moco_v3), "swav": ("test_resnet", swav),
           "barlow_twins": ("test_resnet", barlow_twins), "dino": ("test_vit", dino_vit),
           "mae_pretrain": ("vit_base_patch16_224", mae_pretrain)}


def assert_branch(module, branch: dict, prefix: str = ""):
    own = module.state_dict()
    assert own.keys() == {k[len(prefix):] for k in branch if k.startswith(prefix)}
    for k, v in own.items():
        assert torch.equal(v, branch[prefix + k]), k


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_author_layouts_load_the_evaluated_branch(layout, tmp_path):
    arch, make = LAYOUTS[layout]
    obj, rules, branch, prefix = make()
    torch.save(obj, tmp_path / "ck.pth")
    loaded = load_model(ModelEntry(name=layout, checkpoint=str(tmp_path / "ck.pth"), arch=arch, **rules))
    assert_branch(loaded.module, branch, prefix)
    if layout == "dino":  # argparse.Namespace pickled next to the weights: stubbed, never imported
        assert loaded.identity["unpickle"] == "restricted"
        assert "argparse.Namespace" in loaded.identity["stubbed_globals"]
        assert any("inert stubs" in n for n in loaded.notes)
        assert loaded.identity["state_dict_key_used"] == "teacher"


def test_shipped_moco_rules_without_keep_prefix_fail_with_the_branches_named(tmp_path):
    obj, _, _, _ = moco_v3()
    torch.save(obj, tmp_path / "ck.pth")
    entry = ModelEntry(name="m", checkpoint=str(tmp_path / "ck.pth"), arch="test_resnet",
                       strip_prefix=["module.base_encoder."], drop=[r"^fc\."])
    with pytest.raises(CellError, match=r"unexpected \d+ \[module\.momentum_encoder"):
        load_model(entry)


def test_vicreg_main_function_loads_tensors_only(tmp_path):
    with main_function("exclude_bias_and_norm") as fn:
        obj, rules, bb, _ = vicreg(fn)
        torch.save(obj, tmp_path / "model.pth")
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(tmp_path / "model.pth", weights_only=True)
    with pytest.raises(AttributeError, match="exclude_bias_and_norm"):  # what users of the VICReg repo report
        torch.load(tmp_path / "model.pth", weights_only=False)
    entry = ModelEntry(name="vicreg", checkpoint=str(tmp_path / "model.pth"), arch="test_resnet", **rules)
    loaded = load_model(entry)
    assert_branch(loaded.module, bb)
    assert loaded.identity["stubbed_globals"] == ["__main__.exclude_bias_and_norm"]
    with pytest.raises(CellError, match="full unpickle .* failed .*exclude_bias_and_norm"):
        load_model(ModelEntry(name="vicreg", checkpoint=str(tmp_path / "model.pth"), arch="test_resnet",
                              trust_pickle=True, **rules))


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_that_runs_code_loads_tensors_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    enc = {k: v for k, v in resnet_sd(1).items() if not k.startswith("fc.")}
    torch.save({"state_dict": enc, "hook": RunsCode(marker), "path": tmp_path}, tmp_path / "evil.pth")
    entry = ModelEntry(name="evil", checkpoint=str(tmp_path / "evil.pth"), arch="test_resnet")
    loaded = load_model(entry)
    assert not marker.exists()
    assert_branch(loaded.module, enc)
    assert f"{os.system.__module__}.system" in loaded.identity["stubbed_globals"]
    # Only with the entry's explicit trust does the file run (which shows the marker would reveal it).
    trusted = load_model(ModelEntry(name="evil", checkpoint=str(tmp_path / "evil.pth"), arch="test_resnet",
                                    trust_pickle=True))
    assert marker.exists() and trusted.identity["unpickle"] == "full"
    assert_branch(trusted.module, enc)


def test_teacher_is_preferred_and_the_student_is_noted(tmp_path):
    obj, rules, _, _ = dino_vit()
    torch.save(obj, tmp_path / "ck.pth")
    student = load_model(ModelEntry(name="s", checkpoint=str(tmp_path / "ck.pth"), arch="test_vit",
                                    state_dict_key="student", keep_prefix=["module.backbone."]))
    assert_branch(student.module, obj["student"], "module.backbone.")
    assert any("student" in n and "teacher" in n for n in student.notes)
    # dotted path: the DINO loss centre is one level down
    nested = {"ckpt": {"model.ema": obj["teacher"]}}
    torch.save(nested, tmp_path / "nested.pth")
    teacher = load_model(ModelEntry(name="t", checkpoint=str(tmp_path / "nested.pth"), arch="test_vit",
                                    state_dict_key="ckpt.model.ema", **rules))
    assert_branch(teacher.module, obj["teacher"], "backbone.")
    assert not teacher.notes


def dinov2_teacher(arch, **extra):
    """DINOv2 `do_test`: {'teacher': model.teacher.state_dict()} from a 224 px run (16×16 grid, patch 14)."""
    vit = timm.create_model(arch, num_classes=0, img_size=224, **TINY_VIT)
    sd = randomised(vit.state_dict(), 1)
    if "reg_token" in sd:  # back to the authors' layout: register_tokens, class position inside pos_embed
        sd["register_tokens"] = sd.pop("reg_token")
        sd["pos_embed"] = torch.cat([torch.randn(1, 1, 48), sd["pos_embed"]], 1)
    sd["mask_token"] = torch.randn(1, 48)
    heads = {"dino_head.mlp.0.weight": torch.randn(64, 48), "dino_head.last_layer.weight_g": torch.ones(128, 1)}
    return {"teacher": {**with_prefix("backbone.", sd), **heads}}, sd


def textbook_resample(grid_tokens, old, new):
    """Bicubic resampling of a [1, old*old, D] grid to [1, new*new, D] (what timm and DINOv2 do)."""
    d = grid_tokens.shape[-1]
    x = grid_tokens.reshape(1, old, old, d).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(new, new), mode="bicubic", antialias=True, align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(1, new * new, d)


def test_dinov2_teacher_at_224_loads_into_the_518_px_architecture(tmp_path):
    obj, sd = dinov2_teacher("vit_small_patch14_dinov2")
    torch.save(obj, tmp_path / "teacher_checkpoint.pth")
    entry = ModelEntry(name="d2", checkpoint=str(tmp_path / "teacher_checkpoint.pth"), arch="vit_small_patch14_dinov2",
                       keep_prefix=["backbone."], drop=[r"^mask_token$"], timm_kwargs=TINY_VIT)
    loaded = load_model(entry)
    own = loaded.module.state_dict()
    assert own["pos_embed"].shape == (1, 1 + 37 * 37, 48)
    assert torch.equal(own["pos_embed"][:, :1], sd["pos_embed"][:, :1])
    assert torch.allclose(own["pos_embed"][:, 1:], textbook_resample(sd["pos_embed"][:, 1:], 16, 37), atol=1e-5)
    assert any("16×16 to a 37×37" in n for n in loaded.notes)
    for k, v in own.items():
        if k != "pos_embed":
            assert torch.equal(v, sd[k]), k
    # built at the checkpoint's own size (a 224 px dataset): nothing resampled, every tensor identical
    same = load_model(entry, resolution=224)
    assert_branch(same.module, {k: v for k, v in sd.items() if k != "mask_token"})


def test_dinov2_register_layout_is_converted(tmp_path):
    obj, sd = dinov2_teacher("vit_small_patch14_reg4_dinov2")
    torch.save(obj, tmp_path / "t.pth")
    loaded = load_model(ModelEntry(name="r", checkpoint=str(tmp_path / "t.pth"), arch="vit_small_patch14_reg4_dinov2",
                                   keep_prefix=["backbone."], drop=[r"^mask_token$"], timm_kwargs=TINY_VIT),
                        resolution=224)
    own = loaded.module.state_dict()
    assert torch.equal(own["reg_token"], sd["register_tokens"])
    assert torch.equal(own["cls_token"], sd["cls_token"] + sd["pos_embed"][:, :1])
    assert torch.equal(own["pos_embed"], sd["pos_embed"][:, 1:])


def test_mae_finetuned_global_pool_matches_the_authors_forward(tmp_path):
    """MAE `models_vit.VisionTransformer(global_pool=True)`: mean of the patch tokens, then fc_norm (no norm)."""
    kw = dict(TINY_VIT, img_size=64, global_pool="avg")
    src = timm.create_model("vit_base_patch16_224", num_classes=10, **kw)
    sd = randomised(src.state_dict(), 1)
    assert "fc_norm.weight" in sd and "norm.weight" not in sd and "head.weight" in sd  # MAE's fine-tuned keys
    torch.save({"model": sd, "optimizer": optimizer_state(sd), "epoch": 99, "scaler": {},
                "args": argparse.Namespace(global_pool=True)}, tmp_path / "ft.pth")
    entry = ModelEntry(name="mae_ft", checkpoint=str(tmp_path / "ft.pth"), arch="vit_base_patch16_224",
                       drop=[r"^head\."], timm_kwargs=kw)
    m = load_model(entry).module
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        t = m.patch_embed(x)
        t = torch.cat([sd["cls_token"].expand(2, -1, -1), t], 1) + sd["pos_embed"]
        for blk in m.blocks:
            t = blk(t)
        ref = F.layer_norm(t[:, 1:].mean(1), (48,), sd["fc_norm.weight"], sd["fc_norm.bias"], eps=1e-6)
        assert torch.allclose(m(x), ref, atol=1e-5)
        # the old workaround (fc_norm renamed to norm, class-token pooling) is a different feature
        token = dict(TINY_VIT, img_size=64)
        wrong = load_model(ModelEntry(name="w", checkpoint=str(tmp_path / "ft.pth"), arch="vit_base_patch16_224",
                                      rename=[["^fc_norm", "norm"]], drop=[r"^head\."], timm_kwargs=token)).module
        assert not torch.allclose(wrong(x), ref, atol=1e-2)


def test_random_twin_is_one_network_and_leaves_the_global_rng(tmp_path):
    from benchmark.config import as_dict, load_zoo
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text("models:\n  - {name: r, timm: test_resnet, pretrained: false}\n"
                   "  - {name: s, timm: test_resnet, pretrained: false, init_seed: 7}\n")
    r, s = load_zoo(zoo).models
    assert isinstance(r.init_seed, int) and as_dict(r)["init_seed"] == r.init_seed and s.init_seed == 7
    assert load_zoo(zoo).models[0].init_seed == r.init_seed
    state = torch.get_rng_state()
    a, b, c = load_model(r), load_model(r, resolution=64), load_model(s)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.identity["init_seed"] == r.init_seed and c.identity["init_seed"] == 7
    pa, pb, pc = (torch.cat([p.flatten() for p in x.module.parameters()]) for x in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def zoo_rules() -> dict:
    """Rules of the shipped zoo's checkpoint entries, the commented examples included (uncommented here)."""
    import re
    from pathlib import Path

    import yaml

    from benchmark.config import YamlLoader
    text = (Path(__file__).parents[1] / "model_zoo.yaml").read_text()
    body = "\n".join(line.replace("  # ", "  ", 1) if re.match(r"  # (- name:|  \w+:)", line) else line
                     for line in text.splitlines())
    return {m["name"]: {k: v for k, v in m.items() if k not in ("name", "checkpoint", "arch", "notes")}
            for m in yaml.load(body, Loader=YamlLoader)["models"] if "checkpoint" in m}


def test_shipped_zoo_rules_load_the_authors_layouts(tmp_path):
    rules = zoo_rules()
    cases = {"mocov2_r50": moco_v2, "mocov3_r50": moco_v3, "swav_r50_run": swav, "barlowtwins_r50_run": barlow_twins,
             "dino_vits16_run": dino_vit, "mae_vitb16_run": mae_pretrain}
    assert set(cases) | {"vicreg_r50_run", "dinov2_vits14_run", "mae_vitb16_finetuned"} == set(rules)
    for name, make in cases.items():
        obj, _, branch, _ = make()
        torch.save(obj, tmp_path / f"{name}.pth")
        arch = {"dino_vits16_run": "test_vit", "mae_vitb16_run": "vit_base_patch16_224"}.get(name, "test_resnet")
        kw = dict(rules[name], timm_kwargs={**rules[name].get("timm_kwargs", {}), **TINY_VIT}) if "mae" in name \
            else rules[name]
        loaded = load_model(ModelEntry(name=name, checkpoint=str(tmp_path / f"{name}.pth"), arch=arch, **kw))
        assert_branch(loaded.module, branch)
    with main_function("exclude_bias_and_norm") as fn:
        obj, _, bb, _ = vicreg(fn)
        torch.save(obj, tmp_path / "vicreg.pth")
    assert_branch(load_model(ModelEntry(name="v", checkpoint=str(tmp_path / "vicreg.pth"), arch="test_resnet",
                                        **rules["vicreg_r50_run"])).module, bb)
    obj, sd = dinov2_teacher("vit_small_patch14_dinov2")
    torch.save(obj, tmp_path / "d2.pth")
    d2 = load_model(ModelEntry(name="d2", checkpoint=str(tmp_path / "d2.pth"), arch="vit_small_patch14_dinov2",
                               timm_kwargs=TINY_VIT, **rules["dinov2_vits14_run"]), resolution=224)
    assert_branch(d2.module, {k: v for k, v in sd.items() if k != "mask_token"})


def test_validate_warns_when_a_local_checkpoint_would_not_load(tmp_path, capsys):
    from benchmark.cli import main
    obj, _, _, _ = moco_v3()
    torch.save(obj, tmp_path / "r-50.pth.tar")
    zoo = tmp_path / "zoo.yaml"
    old = "    strip_prefix: [module.base_encoder.]\n"  # the zoo's rule before keep_prefix existed
    entry = (f"models:\n  - name: mocov3\n    checkpoint: {tmp_path / 'r-50.pth.tar'}\n    arch: test_resnet\n"
             f"    state_dict_key: state_dict\n{{rule}}    drop: ['^fc\\.']\n")
    zoo.write_text(entry.format(rule=old))
    assert main(["validate", "--zoo", str(zoo)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "mocov3" in err and "r-50.pth.tar would not load into test_resnet" in err
    assert "unexpected" in err and "module.momentum_encoder" in err
    zoo.write_text(entry.format(rule="    keep_prefix: [module.base_encoder.]\n"))
    assert main(["validate", "--zoo", str(zoo)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_random_twin_seed_is_the_same_in_another_process(tmp_path):
    """The derived seed must not depend on the process (no Python hash()); given the seed, the network is fixed
    (test above). The child imports only the config module, so it stays fast."""
    import subprocess
    from benchmark.config import load_zoo
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text("models:\n  - {name: r, timm: test_resnet, pretrained: false}\n")
    code = "import sys; from benchmark.config import load_zoo; print(load_zoo(sys.argv[1]).models[0].init_seed)"
    env = dict(os.environ, PYTHONHASHSEED="7", PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code, str(zoo)], check=True, env=env, capture_output=True, text=True)
    assert int(out.stdout) == load_zoo(zoo).models[0].init_seed
