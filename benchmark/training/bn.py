"""BatchNorm utilities: DAFT's BN conversion, and which normalisation layers a protocol tunes."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import CellError

BN_TYPES = (nn.modules.batchnorm._BatchNorm,)
AFFINE_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm)


@torch.no_grad()
def convert_bn(model: nn.Module, batches) -> nn.Module:
    """DAFT's BN conversion: move every BN layer's statistics to the target domain without changing the
    eval-mode function.

    With the model in eval mode, each BN layer's input mean M and unbiased variance (m/(m-1)) are recorded per
    batch and averaged over `batches` (an iterable of input tensors). Then
        γ_t = γ_s·√(Σ_t+ε)/√(Σ_s+ε),  β_t = β_s + γ_s·(M_t − M_s)/√(Σ_s+ε),  running stats := (M_t, Σ_t),
    so γ_t(x−M_t)/√(Σ_t+ε)+β_t == γ_s(x−M_s)/√(Σ_s+ε)+β_s for every x. Returns the (same) converted model.
    """
    bns = [m for m in model.modules() if isinstance(m, BN_TYPES) and m.track_running_stats]
    if not bns:
        return model
    if not all(bn.affine for bn in bns):  # checked first: never leave a model half-converted
        raise CellError("convert_bn needs affine BatchNorm layers to keep the function unchanged")
    sums = {id(m): [0.0, 0.0, 0] for m in bns}

    def hook(module, inputs, _output):
        x = inputs[0].float()
        dims = [0] + list(range(2, x.dim()))
        acc = sums[id(module)]
        acc[0] = acc[0] + x.mean(dims)
        acc[1] = acc[1] + x.var(dims, unbiased=True)  # m/(m-1) correction, as the running stats use
        acc[2] += 1

    was_training = model.training
    model.eval()
    handles = [m.register_forward_hook(hook) for m in bns]
    try:
        device = next(model.parameters()).device
        for x in batches:
            model(x.to(device))
    finally:
        for h in handles:
            h.remove()
    for bn in bns:
        s_mean, s_var, n = sums[id(bn)]
        if n == 0:
            continue
        m_t, v_t = (s_mean / n).to(bn.running_mean.dtype), (s_var / n).to(bn.running_var.dtype)
        std_s = (bn.running_var + bn.eps).sqrt()
        std_t = (v_t + bn.eps).sqrt()
        bn.bias.copy_(bn.bias + bn.weight * (m_t - bn.running_mean) / std_s)
        bn.weight.copy_(bn.weight * std_t / std_s)
        bn.running_mean.copy_(m_t)
        bn.running_var.copy_(v_t)
    model.train(was_training)
    return model


def is_resnet(model: nn.Module) -> bool:
    return all(hasattr(model, f"layer{i}") for i in range(1, 5)) and hasattr(model, "bn1")


def tuned_norm_layers(model: nn.Module, which: str = "all") -> tuple[list[nn.Module], str]:
    """The normalisation layers whose affine parameters a BN-tuning protocol trains, and a note for the record.

    'paper' follows the public BN-tuning code on ResNets: the stem BN and, in each residual block, every BN but
    the first (bn2, bn3 of a bottleneck; bn2 of a basic block), never the downsample BN — 37,888 parameters,
    0.16% of a ResNet-50 backbone.
    """
    bns = [m for m in model.modules() if isinstance(m, BN_TYPES) and m.affine]
    if which == "paper":
        if not is_resnet(model):
            raise CellError("bn_layers: paper is defined for ResNets (stem + bn2/bn3 of each block); use 'all'")
        layers = [model.bn1]
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
            for block in stage:
                layers += [getattr(block, n) for n in ("bn2", "bn3") if isinstance(getattr(block, n, None), BN_TYPES)]
        return layers, "BatchNorm: stem + bn2/bn3 of each block (paper)"
    if which != "all":
        raise CellError(f"bn_layers must be 'all' or 'paper', got '{which}'")
    if bns:
        return bns, f"BatchNorm: all {len(bns)} layers"
    norms = [m for m in model.modules() if isinstance(m, AFFINE_NORM_TYPES) and m.weight is not None]
    if not norms:
        raise CellError("no BatchNorm, LayerNorm or GroupNorm with affine parameters to tune")
    kinds = sorted({type(m).__name__ for m in norms})
    return norms, f"no BatchNorm in this network: tuned the affine parameters of {len(norms)} {'/'.join(kinds)} layers"
