"""`block: auto` for Layer-FT / SCL-FT: the block to tune, chosen from the pretrained network's layer-wise
features on the target's training split by a frozen-feature proxy (default NC1).

The neural-collapse paper (Li, Liu et al.) links lower downstream NC1 of a layer's features to higher accuracy of a
probe on them, and tunes one block so that the features reaching the head collapse further. Read as a rule:
among the blocks Layer-FT can tune (surgery.blocks_of: ResNet residual blocks, ViT encoder blocks), take the one
whose pooled pretrained features score best by the proxy — the lowest NC1 by default. The record keeps every
block's score and the rule, so the choice can be checked against the fixed middle block (`block: 0`).
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ..layers import pool
from .surgery import blocks_of


def check_block_proxy(name: str, where: str = "block_proxy") -> None:
    from ..proxies import PROXIES
    ok = [n for n in PROXIES.names() if not PROXIES.get(n).needs_test and not PROXIES.get(n).needs_source_probs]
    if name not in ok:
        raise ConfigError(f"{where}: '{name}' cannot choose a block; use a proxy computed on training features "
                          f"alone: {', '.join(ok)}")


@torch.inference_mode()
def block_features(backbone, batches, device, blocks=None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Pooled output of every Layer-FT block (or of `blocks`; spatial mean, ViT: patch-token mean) over (x, y)
    batches, one forward per batch; ([n, width] per block on the CPU, labels)."""
    if blocks is None:
        blocks = blocks_of(backbone)[0]
    prefix = int(getattr(backbone, "num_prefix_tokens", 1 if hasattr(backbone, "cls_token") else 0))
    outs = [[] for _ in blocks]
    hooks = [b.register_forward_hook(lambda _m, _i, o, k=k: outs[k].append(pool(o, "patch", prefix)))
             for k, b in enumerate(blocks)]
    labels = []
    was = backbone.training
    try:
        backbone.eval().to(device)
        for x, y in batches:
            backbone(x.to(device))
            labels.append(y.cpu())
    finally:
        for h in hooks:
            h.remove()
        backbone.train(was)
    return [torch.cat(o).cpu() for o in outs], torch.cat(labels)


def layer_nc1(trained_backbone, pretrained_backbone, batches, device) -> dict:
    """Layer-wise NC1 (the paper's Fig. 10) of a trained cell: NC1 of every block's pooled features on the training
    split, for the trained backbone and the pretrained one it started from, over the same images."""
    from ..proxies import get_proxy
    from .transfer import blocks_for
    batches = [(x.cpu(), y.cpu()) for x, y in batches]  # the same images through both networks
    out = {}
    for name, net in (("trained", trained_backbone), ("pretrained", pretrained_backbone)):
        feats, labels = block_features(net, batches, device, blocks_for(net))
        out[name] = [float(get_proxy("nc1")(f, labels)["nc1"]) for f in feats]
    out["n_images"] = int(sum(len(y) for _, y in batches))
    return out


def choose_block(backbone, batches, proxy_name: str = "nc1", device="cpu") -> dict:
    """{'block': 1-based index, 'proxy', 'scores': {block: score}, 'reason'} for the block whose pretrained
    features score best by the proxy (ties: the shallower block, fewer layers ahead of the head to change)."""
    from ..proxies import get_proxy
    check_block_proxy(proxy_name)
    proxy = get_proxy(proxy_name)
    feats, labels = block_features(backbone, batches, device)
    scores = {}
    for k, f in enumerate(feats, start=1):
        value = proxy(f, labels)[proxy.primary]
        scores[k] = float(value)
    finite = {k: v for k, v in scores.items() if v == v and abs(v) != float("inf")}
    if not finite:
        raise ConfigError(f"block: auto: {proxy_name} is not finite on any block; set block to an index")
    pick = (max if proxy.higher_is_better else min)(finite, key=lambda k: (finite[k], -k) if proxy.higher_is_better
                                                    else (finite[k], k))
    word = "highest" if proxy.higher_is_better else "lowest"
    reason = (f"block {pick} of {len(scores)}: {word} {proxy_name} ({finite[pick]:.4g}) of the pretrained blocks' "
              f"pooled features on the training split")
    return {"block": pick, "proxy": proxy_name, "scores": scores, "reason": reason}
