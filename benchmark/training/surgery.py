"""Model surgery for neural-collapse guided fine-tuning: which block Layer-FT trains, and SCL-FT's skip."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CellError
from .bn import is_resnet


def blocks_of(model: nn.Module) -> tuple[list[nn.Module], str, int]:
    """(blocks in order, family, default 1-based block): the middle of the network as the papers pick it
    (ResNet: first block of layer3 = 5 of ResNet-18's 8, 8 of ResNet-50's 16; ViT: 8 of 12)."""
    if is_resnet(model):
        blocks = [b for stage in (model.layer1, model.layer2, model.layer3, model.layer4) for b in stage]
        return blocks, "resnet", len(model.layer1) + len(model.layer2) + 1
    if hasattr(model, "blocks") and hasattr(model, "cls_token"):
        blocks = list(model.blocks)
        return blocks, "vit", max(1, round(2 * len(blocks) / 3))
    raise CellError(f"layer_ft/scl_ft support timm ResNets and ViTs, not {type(model).__name__}")


class SkipConnected(nn.Module):
    """SCL-FT: the tuned block's output, pooled per channel (ViT: its class token) and zero-padded to the
    penultimate width, is added to the penultimate features before the head."""

    def __init__(self, backbone: nn.Module, block: nn.Module, family: str, head: nn.Module):
        super().__init__()
        self.backbone, self.head, self.family = backbone, head, family
        self._out = None
        block.register_forward_hook(self._keep)

    def _keep(self, _module, _inputs, output):
        self._out = output

    def skip(self, width: int) -> torch.Tensor:
        h = self._out
        pooled = F.adaptive_avg_pool2d(h, 1).flatten(1) if self.family == "resnet" else h[:, 0]
        if pooled.shape[1] > width:
            raise CellError(f"SCL-FT: block width {pooled.shape[1]} exceeds the penultimate width {width}")
        return F.pad(pooled, (0, width - pooled.shape[1]))

    def features(self, x):
        f = self.backbone(x)
        return f + self.skip(f.shape[1])

    def forward(self, x):
        return self.head(self.features(x))


class WithHead(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def features(self, x):
        return self.backbone(x)

    def forward(self, x):
        return self.head(self.backbone(x))
