"""Per-layer pooled features in one forward pass: which layers a model exposes, how a `layers:` setting names
them, and the extraction that pools every requested layer on the device while the batch is in flight.

A model's layers are timm's `feature_info` taps (the blocks `forward_intermediates` returns: ResNet stem + stages,
ViT blocks, EfficientNet/MobileNet/ConvNeXt stages), plus `last`: today's pooled penultimate features (what
`module(x)` returns once the classifier is reset), so a `last` record equals a record made before layers existed.
Non-timm models (torchvision, hub) get forward hooks on their block list instead.

Pooling follows Li, Liu et al. (neural collapse in transfer, Fig. 9): global average over space for conv maps;
for token maps the mean over patch tokens (`token_pool: patch`), or the class token (`cls`), or the mean over all
tokens, prefix tokens included (`all`).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from .errors import CellError, ConfigError, unknown_name

LAST = "last"
TOKEN_POOLS = ("patch", "cls", "all")


@dataclass(frozen=True)
class LayerInfo:
    name: str  # module name (timm feature_info 'module', e.g. layer2, blocks.5) or 'last'
    index: int  # position among the model's blocks (0 = shallowest); 'last' comes after every block
    dim: int  # width of the pooled features


def has_intermediates(module: nn.Module) -> bool:
    return callable(getattr(module, "forward_intermediates", None)) and hasattr(module, "feature_info")


def hooked_blocks(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Block list of a non-timm model, by the conventions torchvision follows: ResNet stages, a ViT encoder's
    layers, a `features` Sequential (MobileNet, EfficientNet, ConvNeXt, VGG), or `blocks`."""
    named = dict(module.named_modules())
    if all(f"layer{i}" in named for i in (1, 2, 3, 4)):
        return [(f"layer{i}", named[f"layer{i}"]) for i in (1, 2, 3, 4)]
    for prefix in ("encoder.layers", "features", "blocks"):
        seq = named.get(prefix)
        if isinstance(seq, (nn.Sequential, nn.ModuleList)) and len(seq):
            return [(f"{prefix}.{i}", b) for i, b in enumerate(seq)]
    raise CellError(f"{type(module).__name__} exposes no block list bench knows (timm forward_intermediates, "
                    f"layer1..4, encoder.layers, features, blocks); use layers: [last]")


def num_prefix_tokens(module: nn.Module) -> int:
    """Class/register tokens in front of the patch tokens: timm's attribute, or torchvision ViT's class token."""
    if hasattr(module, "num_prefix_tokens"):
        return int(module.num_prefix_tokens)
    return 1 if getattr(module, "class_token", None) is not None else 0


def last_dim(module: nn.Module) -> int | None:
    for attr in ("head_hidden_size", "num_features"):
        if isinstance(getattr(module, attr, None), int):
            return int(getattr(module, attr))
    return None


@torch.inference_mode()
def available_layers(module: nn.Module, input_size: int = 224) -> list[LayerInfo]:
    """Every layer `layers:` can name, shallow to deep, `last` at the end. timm models: read from feature_info;
    others (or a timm model that does not state its pooled width): one forward of a zero image measures the
    widths the forward hooks would pool."""
    timm_model = has_intermediates(module)
    blocks = [] if timm_model else hooked_blocks(module)
    if timm_model:
        table = [LayerInfo(f["module"], i, int(f["num_chs"])) for i, f in enumerate(module.feature_info)]
        if last_dim(module) is not None:
            return table + [LayerInfo(LAST, len(table), last_dim(module))]
    dims: dict = {}
    hooks = [b.register_forward_hook(lambda _m, _i, o, n=n: dims.__setitem__(n, pool(o, "patch", 1).shape[1]))
             for n, b in blocks]
    try:
        p = next(module.parameters(), None)
        x = torch.zeros(1, 3, input_size, input_size, device=p.device if p is not None else "cpu")
        was = module.training
        width = int(module.eval()(x).shape[1])
        module.train(was)
    finally:
        for h in hooks:
            h.remove()
    if not timm_model:
        table = [LayerInfo(n, i, dims[n]) for i, (n, _) in enumerate(blocks)]
    return table + [LayerInfo(LAST, len(table), width)]


def resolve_layers(spec, table: list[LayerInfo], where: str = "layers") -> list[str]:
    """`all`, or a list of block indices (negative from the end of the blocks) and names -> names, shallow to deep,
    each once. 'last' is the pooled penultimate output, not the last block."""
    blocks = [t.name for t in table if t.name != LAST]
    if spec == "all":
        return [t.name for t in table]
    if not isinstance(spec, list):
        raise ConfigError(f"{where}: must be 'all' or a list of block indices and names, got {spec!r}")
    wanted = set()
    for item in spec:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise ConfigError(f"{where}: {item!r} is neither a block index nor a layer name")
        if isinstance(item, int):
            if not -len(blocks) <= item < len(blocks):
                raise ConfigError(f"{where}: block index {item} is out of range; this model has {len(blocks)} "
                                  f"blocks (0..{len(blocks) - 1}, or -{len(blocks)}..-1 from the end)")
            wanted.add(blocks[item])
        elif item == LAST or item in blocks:
            wanted.add(item)
        else:
            raise unknown_name("layer", item, [t.name for t in table], where)
    return [t.name for t in table if t.name in wanted]


def pool(h, token_pool: str = "patch", prefix: int = 0) -> torch.Tensor:
    """One block's output -> [B, C] float32. NCHW maps: mean over space. Token maps [B, N, C]: patch-token mean
    (prefix tokens left out), the class token, or the mean over all tokens. timm's (NCHW patches, prefix tokens)
    pairs from `return_prefix_tokens` are pooled the same way."""
    if isinstance(h, (tuple, list)):
        spatial, pre = h
        if token_pool == "cls":
            return pre[:, 0].float()
        if token_pool == "all":
            n = spatial.shape[2] * spatial.shape[3] + pre.shape[1]
            return ((spatial.float().sum((2, 3)) + pre.float().sum(1)) / n)
        return spatial.float().mean((2, 3))
    if h.dim() == 4:
        return h.float().mean((2, 3))
    if h.dim() == 3:
        if token_pool == "cls":
            if prefix < 1:
                raise CellError("token_pool: cls needs a model with a class token")
            return h[:, 0].float()
        return (h if token_pool == "all" else h[:, prefix:]).float().mean(1)
    return h.float().flatten(1)


class LayerTap:
    """Calls the model once per batch and returns {layer name: pooled [B, D]} for the requested names (always
    including 'last'). timm: `forward_intermediates` with the wanted indices, then `forward_head` on its final
    features; others: forward hooks that pool inside the forward, so no full map outlives its block."""

    def __init__(self, module: nn.Module, table: list[LayerInfo], names: list[str], token_pool: str = "patch"):
        if token_pool not in TOKEN_POOLS:
            raise ConfigError(f"token_pool is {token_pool!r}; it must be one of {', '.join(TOKEN_POOLS)}")
        by_name = {t.name: t for t in table}
        for n in names:
            if n not in by_name:
                raise unknown_name("layer", n, list(by_name), "layers")
        self.module, self.token_pool = module, token_pool
        self.names = [t.name for t in table if t.name in set(names) | {LAST}]
        self.blocks = [n for n in self.names if n != LAST]
        self.indices = [by_name[n].index for n in self.blocks]
        self.prefix = num_prefix_tokens(module)
        self.timm = has_intermediates(module)
        self._hooks, self._out = [], {}
        if self.timm:
            params = inspect.signature(module.forward_intermediates).parameters
            self._kw = {"output_fmt": "NCHW"}
            if token_pool != "patch" and self.prefix:
                if "return_prefix_tokens" not in params:
                    raise CellError(f"{type(module).__name__} cannot return prefix tokens; use token_pool: patch")
                self._kw["return_prefix_tokens"] = True
        else:
            mods = dict(hooked_blocks(module))
            for n in self.blocks:
                self._hooks.append(mods[n].register_forward_hook(
                    lambda _m, _i, o, n=n: self._out.__setitem__(n, pool(o, token_pool, self.prefix))))

    def __call__(self, x) -> dict:
        if not self.timm:
            self._out = {}
            last = self.module(x).float()
            return {**self._out, LAST: last}
        if not self.blocks:
            return {LAST: self.module(x).float()}
        final, inters = self.module.forward_intermediates(x, indices=self.indices, **self._kw)
        if len(inters) != len(self.blocks):
            raise CellError(f"{type(self.module).__name__}.forward_intermediates returned {len(inters)} maps for "
                            f"{len(self.blocks)} requested layers")
        out = {n: pool(h, self.token_pool, self.prefix) for n, h in zip(self.blocks, inters)}
        out[LAST] = self.module.forward_head(final).float()
        return out

    def close(self):
        for h in self._hooks:
            h.remove()
        self._hooks = []


@torch.inference_mode()
def extract_layers(module, images, table, names, batch_size=128, device="cpu", amp=True, token_pool="patch",
                   head=None, desc="layers"):
    """({layer: [N, D] float32 on the CPU}, labels, source probabilities or None) for every image of `images` (a
    `StoredImages` view) in one forward pass per batch; 'last' always included. Pooled per batch on the device,
    so memory is O(batch) in the feature maps. bf16 autocast + channels_last on CUDA, as `features.extract`."""
    from .features import autocast, channels_last
    device = torch.device(device)
    module = module.eval().to(device)
    nhwc = channels_last(device)
    if nhwc:
        module = module.to(memory_format=torch.channels_last)
    if head is not None:
        head = head.eval().to(device).float()
    tap = LayerTap(module, table, names, token_pool)
    feats, labels, probs = {n: [] for n in tap.names}, [], []
    try:
        with autocast(device, amp):
            for x, y in tqdm(images.batches(batch_size, device), desc=desc, leave=False, disable=None):
                if nhwc:
                    x = x.contiguous(memory_format=torch.channels_last)
                for n, f in tap(x).items():
                    feats[n].append(f)
                labels.append(y)
                if head is not None:
                    with torch.autocast(device.type, enabled=False):
                        probs.append(torch.softmax(head(feats[LAST][-1]), dim=1))
    finally:
        tap.close()
    out = {n: torch.cat(v).cpu() for n, v in feats.items()}
    return out, torch.cat(labels).cpu(), (torch.cat(probs).cpu() if head is not None else None)
