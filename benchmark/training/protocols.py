"""Training protocols as small declarations over the engine: what trains, at what learning rate, how each
normalisation layer behaves, how the head starts, which hyperparameters are swept."""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..checks import BOOLEAN, Rule, integer, number, one_of, positive
from ..data.augment import RESIZE_MODES
from ..errors import CellError
from ..registry import Registry
from .bn import BN_TYPES, convert_bn, tuned_norm_layers
from .engine import Setup
from .surgery import SkipConnected, WithHead, blocks_of

PROTOCOLS: Registry = Registry("training protocol")

COMMON = dict(
    epochs=10,  # passes over the training split
    batch_size=64,  # per step; halved automatically on CUDA out-of-memory
    lr=0.01,  # a list is swept (grid), chosen on validation
    wd=0.0,  # weight decay; a list is swept
    momentum=0.9,  # SGD momentum
    warmup_epochs=0.0,  # linear warm-up before the cosine decay
    head_init_std=0.01,  # N(0, std) head initialisation where the protocol draws one
    crop_scale_min=0.08,  # RandomResizedCrop scale lower bound
    train_resize="random",  # crop resize: random (timm's default: bilinear or bicubic per sample) | bilinear | bicubic | roi_align (one batched call)
    precision="auto",  # auto (measured on CUDA: bf16 + channels_last or fp32, whichever is faster) | bf16 | fp32
    compile=False,  # torch.compile the model; compile time is reported apart from images/s
)

LR = number(0, 10, lo_open=True, why=" (SGD above 10 only diverges; the papers sweep 1e-4…0.1)")
# Ranges of COMMON's keys; a protocol adds its own with register(..., ranges=). A list value is a sweep and each
# of its values must pass (checks.swept).
COMMON_RANGES = dict(epochs=integer(1), batch_size=integer(1), lr=LR, wd=number(0),
                     momentum=number(0, 1, hi_open=True), warmup_epochs=number(0), head_init_std=number(0),
                     crop_scale_min=number(0, 1, lo_open=True), precision=one_of("auto", "bf16", "fp32"),
                     train_resize=one_of(*RESIZE_MODES), wd_norm_bias=BOOLEAN)


@dataclass
class BuildContext:
    backbone: nn.Module  # pristine pretrained backbone (copied per sweep point)
    feature_dim: int
    num_classes: int
    seed: int
    linear_head: Callable[[], tuple]  # () -> (W [K, D], b [K]) of the linear probe on raw features
    target_batches: Callable[[], object]  # () -> iterable of eval-transformed target training images


@dataclass
class TrainProtocol:
    name: str
    doc: str
    build: Callable[[BuildContext, dict], Setup]
    defaults: dict = field(default_factory=dict)
    staged: tuple = ()  # keys swept one after another (DAFT's two-step sweep) instead of as a grid
    ranges: dict = field(default_factory=dict)  # hyperparameter -> checks.Rule for one value

    def hp_names(self) -> set:
        return set(self.defaults) | {"diagnostics"}  # opt-in transfer diagnostics (training/transfer.py)

    def combos(self, hp: dict, best_so_far: dict | None = None, stage: int = 0):
        """Grid over list-valued hp; for staged protocols, the values of one key at a time."""
        if self.staged:
            other = [k for k, v in hp.items() if isinstance(v, list) and k not in self.staged]
            if other:
                raise CellError(f"{self.name} sweeps {' then '.join(self.staged)}; give {', '.join(other)} one value")
            key = self.staged[stage]
            base = {k: (v[0] if isinstance(v, list) else v) for k, v in hp.items()}
            base.update(best_so_far or {})
            for earlier in self.staged[stage + 1:]:
                base[earlier] = hp.get(f"{earlier}_stage1", base[earlier])
            return [{**base, key: v} for v in _as_list(hp[key])]
        swept = [k for k, v in hp.items() if isinstance(v, list)]
        fixed = {k: v for k, v in hp.items() if k not in swept}
        return [{**fixed, **dict(zip(swept, vals))} for vals in itertools.product(*(hp[k] for k in swept))]


def _as_list(v):
    return v if isinstance(v, list) else [v]


def register(name, doc, staged=(), ranges=None, **defaults):
    def deco(build):
        merged = {k: v for k, v in {**COMMON, **defaults}.items() if v is not None}  # None: not used here
        rules = {k: r for k, r in {**COMMON_RANGES, **(ranges or {})}.items() if k in merged}
        PROTOCOLS.register(name)(TrainProtocol(name, doc, build, merged, staged, rules))
        return build
    return deco


def new_head(ctx: BuildContext, hp, zero=False) -> nn.Linear:
    head = nn.Linear(ctx.feature_dim, ctx.num_classes)
    g = torch.Generator().manual_seed(ctx.seed)
    with torch.no_grad():
        if zero:
            head.weight.zero_()
        else:
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * hp["head_init_std"])
        head.bias.zero_()
    return head


def eval_except(modules):
    def set_modes(model):
        model.eval()
        for m in modules:
            m.train()
    return set_modes


def bn_eval(model):
    for m in model.modules():
        if isinstance(m, BN_TYPES):
            m.eval()


def group(name, params, lr, wd):
    return {"name": name, "params": [p for p in params if p is not None], "lr": lr, "weight_decay": wd}


def no_decay_params(model: nn.Module) -> set:
    """ids of the parameters timm's train.py does not decay (`optim.param_groups_weight_decay`, which
    `create_optimizer_v2` applies by default): 1-d tensors (norm affines), biases, and the names a module lists in
    `no_weight_decay()` (ViT position embeddings, class token), looked up on every submodule that has it."""
    from fnmatch import fnmatch
    out = set()
    for prefix, module in model.named_modules():
        listed = getattr(module, "no_weight_decay", None)
        names = listed() if callable(listed) else ()
        for n, p in module.named_parameters():
            if any(n == pat or fnmatch(n, pat) for pat in names):
                out.add(id(p))
    for n, p in model.named_parameters():
        if p.ndim <= 1 or n.endswith(".bias"):
            out.add(id(p))
    return out


def decay_groups(name, model: nn.Module, lr, wd, wd_norm_bias: bool) -> list:
    """All of `model`'s parameters in one group, or (wd_norm_bias false, timm's rule) two: decayed, and the
    norm/bias/no_weight_decay() ones at weight decay 0."""
    params = list(model.parameters())
    if wd_norm_bias or not wd:
        return [group(name, params, lr, wd)]
    skip = no_decay_params(model)
    return [g for g in (group(name, [p for p in params if id(p) not in skip], lr, wd),
                        group(f"{name} (norm/bias, no wd)", [p for p in params if id(p) in skip], lr, 0.0))
            if g["params"]]


@register("bn_tune", "BN-tuning proxy: linear head + BatchNorm affines (γ, β) trained, those BNs in train mode",
          lr=0.01, wd=1e-6, bn_layers="all", ranges=dict(bn_layers=one_of("all", "paper")))
def build_bn_tune(ctx, hp):
    backbone = copy.deepcopy(ctx.backbone)
    layers, note = tuned_norm_layers(backbone, hp["bn_layers"])
    head = new_head(ctx, hp)
    params = [p for m in layers for p in (m.weight, m.bias)] + list(head.parameters())
    bn_train = [m for m in layers if isinstance(m, BN_TYPES)]
    return Setup(WithHead(backbone, head), [group("norm+head", params, hp["lr"], hp["wd"])],
                 eval_except(bn_train), [note])


@register("linear_aug", "Control for bn_tune: same engine and augmentation, head only, every BN in eval mode",
          lr=0.01, wd=1e-6)
def build_linear_aug(ctx, hp):
    head = new_head(ctx, hp)
    model = WithHead(copy.deepcopy(ctx.backbone), head)
    return Setup(model, [group("head", head.parameters(), hp["lr"], hp["wd"])], eval_except([]))


# wd_norm_bias: false (the default, timm's rule) leaves norm affines and biases undecayed; true decays them too.
@register("finetune", "End-to-end fine-tune: all parameters, BN in train mode, random head, lr x wd grid",
          lr=[0.1, 0.01, 0.001, 0.0001], wd=[0.0, 1e-6, 1e-5, 1e-4, 1e-3], wd_norm_bias=False)
def build_finetune(ctx, hp):
    model = WithHead(copy.deepcopy(ctx.backbone), new_head(ctx, hp))
    return Setup(model, decay_groups("all", model, hp["lr"], hp["wd"], hp["wd_norm_bias"]), lambda m: None)


@register("lp_ft", "LP-FT (Kumar et al.): head from the linear probe, then a small-lr fine-tune with BN in eval",
          lr=[0.001, 0.0001], wd=0.0, wd_norm_bias=False)
def build_lp_ft(ctx, hp):
    W, b = ctx.linear_head()
    head = nn.Linear(ctx.feature_dim, ctx.num_classes)
    with torch.no_grad():
        head.weight.copy_(W)
        head.bias.copy_(b)
    model = WithHead(copy.deepcopy(ctx.backbone), head)
    return Setup(model, decay_groups("all", model, hp["lr"], hp["wd"], hp["wd_norm_bias"]), bn_eval,
                 ["head initialised from the linear probe's solution on the training split"])


@register("daft", "DAFT: BN conversion to the target domain, then one-stage LP+FT with zero head and two lrs",
          staged=("lr_backbone", "lr_head"), lr=None, lr_backbone=[0.01, 0.001, 0.0001], lr_head=[10.0, 3.0, 1.0, 0.3, 0.1],
          lr_head_stage1=1.0, wd=0.0, bn_batches=0,
          ranges=dict(lr_backbone=LR, lr_head=positive(), lr_head_stage1=positive(), bn_batches=integer(0)))
def build_daft(ctx, hp):
    backbone = copy.deepcopy(ctx.backbone)
    batches = ctx.target_batches()
    if hp["bn_batches"]:
        batches = itertools.islice(batches, hp["bn_batches"])
    convert_bn(backbone, batches)
    head = new_head(ctx, hp, zero=True)
    groups = [group("backbone", backbone.parameters(), hp["lr_backbone"], hp["wd"]),
              group("head", head.parameters(), hp["lr_head"], hp["wd"])]
    return Setup(WithHead(backbone, head), groups, lambda m: None, ["BN converted to target statistics"])


# `block`: 1-based block index, 0 for the paper's middle block, or auto (chosen by `block_proxy`: block_choice.py)
BLOCK = Rule(lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
             "an integer ≥ 0 (0: the default block) or auto (the block the block_proxy scores best)")
BLOCK_PROXY = Rule(lambda v: isinstance(v, str) and _block_proxy_ok(v), "a proxy computed on training features "
                   "alone (nc1, cdnv, numerical_rank, hscore, logme, ...), chosen per block when block is auto")


def _block_proxy_ok(name: str) -> bool:
    from ..errors import ConfigError
    from .block_choice import check_block_proxy
    try:
        check_block_proxy(name)
    except ConfigError:
        return False
    return True


def _one_block(ctx, hp, skip: bool):
    backbone = copy.deepcopy(ctx.backbone)
    blocks, family, default = blocks_of(backbone)
    if hp["block"] == "auto":  # the training runner resolves it once per cell (block_choice.choose_block)
        raise CellError("block: auto was not resolved before building the model")
    index = hp["block"] or default
    if not 1 <= index <= len(blocks):
        raise CellError(f"block must be in 1..{len(blocks)} for this {family}, got {index}")
    block, head = blocks[index - 1], new_head(ctx, hp)
    model = SkipConnected(backbone, block, family, head) if skip else WithHead(backbone, head)
    params = list(block.parameters()) + list(head.parameters())
    return Setup(model, [group(f"block{index}+head", params, hp["lr"], hp["wd"])], eval_except([block]),
                 [f"{family}: trained block {index} of {len(blocks)}" + (" with skip to the penultimate" if skip
                                                                       else "")])


@register("layer_ft", "Layer-FT: one middle block + head trained, the rest frozen (neural-collapse guided)",
          lr=[0.01, 0.001], wd=1e-5, block=0, block_proxy="nc1", ranges=dict(block=BLOCK, block_proxy=BLOCK_PROXY))
def build_layer_ft(ctx, hp):
    return _one_block(ctx, hp, skip=False)


@register("scl_ft", "SCL-FT: Layer-FT plus a skip from the tuned block's pooled output to the penultimate",
          lr=[0.01, 0.001], wd=1e-5, block=0, block_proxy="nc1", ranges=dict(block=BLOCK, block_proxy=BLOCK_PROXY))
def build_scl_ft(ctx, hp):
    return _one_block(ctx, hp, skip=True)
