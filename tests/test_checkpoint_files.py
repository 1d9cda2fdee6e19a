"""Checkpoint files that are not what they claim: one clear line each, nothing expanded or run before the checks
(audit: `IndexError: pop from empty list`, `EOFError:`; a 1.9 MB zip bomb expanded to 2 GB by `validate` and
`run`; code ran during `bench validate` under `trust_pickle: true`)."""
import pickle
import zipfile

import pytest
import torch
from test_checkpoints import RunsCode, resnet_sd

from benchmark.cli import main
from benchmark.config import ModelEntry
from benchmark.errors import CellError
from benchmark.models import load_model


def entry(path, **kw):
    return ModelEntry(name="m", checkpoint=str(path), arch="test_resnet", **kw)


def zoo(tmp_path, path, extra=""):
    z = tmp_path / "zoo.yaml"
    z.write_text(f"models:\n  - name: m\n    checkpoint: {path}\n    arch: test_resnet\n{extra}")
    return z


@pytest.mark.parametrize("kind", ["truncated", "text", "empty", "plain_pickle", "zip_without_data_pkl",
                                  "legacy_truncated"])
def test_a_file_torch_did_not_write_is_not_a_pytorch_checkpoint(tmp_path, capsys, kind):
    good, path = tmp_path / "good.pth", tmp_path / "bad.pth"
    sd = {k: v for k, v in resnet_sd(1).items() if not k.startswith("fc.")}
    torch.save(sd, good)
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "text":
        path.write_text("<html>404 Not Found</html>\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "plain_pickle":
        path.write_bytes(pickle.dumps({"state_dict": {"w": [1.0, 2.0]}}))
    elif kind == "zip_without_data_pkl":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("weights/readme.txt", "not a checkpoint")
    else:
        torch.save(sd, good, _use_new_zipfile_serialization=False)
        path.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CellError) as e:
        load_model(entry(path))
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and f"{path} is not a PyTorch checkpoint" in msg, msg
    assert main(["validate", "--zoo", str(zoo(tmp_path, path))]) == 0  # a warning: the cell fails, not the config
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("warning: ") and "is not a PyTorch checkpoint" in err
    assert load_model(entry(good)).identity["unpickle"] == "weights_only"  # the real file still loads


def bomb(path, mb: int = 50):
    """A zip laid out as torch.save's, whose one entry declares `mb` MB of zeros in ~50 KB on disk."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        with z.open("archive/data/0", "w") as f:
            chunk = bytes(1 << 20)
            for _ in range(mb):
                f.write(chunk)
    return path


def test_a_zip_bomb_is_refused_from_its_declared_sizes_before_torch_reads_it(tmp_path, capsys, monkeypatch):
    path = bomb(tmp_path / "bomb.pth")
    assert path.stat().st_size < 200_000
    real_load = torch.load

    def no_load(*a, **kw):
        raise AssertionError("torch.load reached")
    monkeypatch.setattr(torch, "load", no_load)
    with pytest.raises(CellError, match=r"bomb\.pth expands beyond 0\.02 GB \(0\.0524 GB declared in a 0\.\d MB file\); "
                                        r"raise max_checkpoint_gb if you trust it"):
        load_model(entry(path, max_checkpoint_gb=0.02))
    assert main(["validate", "--zoo", str(zoo(tmp_path, path, "    max_checkpoint_gb: 0.02\n"))]) == 0
    assert "expands beyond 0.02 GB" in capsys.readouterr().err
    monkeypatch.setattr(torch, "load", real_load)
    with pytest.raises(CellError, match="not a PyTorch checkpoint or is damaged"):  # under the limit: read
        load_model(entry(path, max_checkpoint_gb=1))


def test_validate_never_runs_code_from_a_checkpoint_even_with_trust_pickle(tmp_path, capsys):
    marker = tmp_path / "ran"
    enc = {k: v for k, v in resnet_sd(1).items() if not k.startswith("fc.")}
    torch.save({"state_dict": enc, "hook": RunsCode(marker)}, tmp_path / "evil.pth")
    z = zoo(tmp_path, tmp_path / "evil.pth", "    trust_pickle: true\n")
    assert main(["validate", "--zoo", str(z)]) == 0
    assert not marker.exists()
    assert "would not load" not in capsys.readouterr().err  # its structure was read: the keys fit
    load_model(entry(tmp_path / "evil.pth", trust_pickle=True))  # loading does trust the file, so it runs:
    assert marker.exists()  # the marker would have shown validate running it
