import time

import pytest
import timm
import torch
from PIL import Image
from skimage import data as skdata

from benchmark.config import ModelEntry
from benchmark.errors import CellError, ConfigError
from benchmark.models import load_model
from benchmark.models.sources import remapped_packaged_file


def test_packaged_lite0_remap_is_correct_on_a_real_photo():
    """Position-remapped weights must still be ImageNet's: chelsea is a cat (classes 281-285)."""
    path, _ = remapped_packaged_file("efficientnet_lite0")
    m = timm.create_model("efficientnet_lite0", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    t = timm.data.create_transform(**timm.data.resolve_model_data_config(m))
    with torch.no_grad():
        top = m(t(Image.fromarray(skdata.chelsea()))[None]).argmax().item()
    assert 281 <= top <= 285


@pytest.mark.parametrize("name", ["mobilenetv2_100", "efficientnet_lite1"])
def test_packaged_backbones_give_pooled_features(name):
    loaded = load_model(ModelEntry(name="m", package=name))
    assert not loaded.module.training
    assert loaded.module(torch.randn(2, 3, 64, 64)).shape == (2, 1280)
    assert loaded.identity["pretrained"] and loaded.identity["version"]
    random = load_model(ModelEntry(name="r", package=name, pretrained=False))
    p0 = next(loaded.module.parameters())
    assert not torch.equal(p0, next(random.module.parameters()))


def test_checkpoint_with_prefix_and_head_is_remapped_and_strict(tmp_path):
    ref = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    sd = {f"module.encoder_q.{k}": v for k, v in ref.state_dict().items()}
    sd["module.encoder_q.fc.0.weight"] = torch.randn(4, 512)
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "ck.pth")
    entry = ModelEntry(name="moco", checkpoint=str(tmp_path / "ck.pth"), arch="resnet18",
                       strip_prefix=["module.encoder_q."], drop=[r"^fc\."])
    loaded = load_model(entry)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), ref(x))
    bad = ModelEntry(name="bad", checkpoint=str(tmp_path / "ck.pth"), arch="resnet18")
    with pytest.raises(CellError, match=r"missing \d+ \[.*unexpected \d+ \[module\.encoder_q"):
        load_model(bad)


def test_uncached_hub_weights_fail_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(CellError, match="not in the local Hugging Face cache"):
        load_model(ModelEntry(name="dino", timm="vit_small_patch16_224.dino"))
    assert time.time() - t0 < 2.0


def test_unknown_names_suggest_valid_ones():
    with pytest.raises(ConfigError, match="not a timm architecture"):
        load_model(ModelEntry(name="x", timm="resnet_18", pretrained=False))
    with pytest.raises(ConfigError, match="Did you mean mobilenetv2_100"):
        load_model(ModelEntry(name="x", package="mobilenetv2"))
    with pytest.raises(ConfigError, match="no pretrained tag"):
        load_model(ModelEntry(name="x", timm="resnet18.nonexistent_tag"))
