"""A full disk is one line, "no space left on <folder>", never torch's 'inline_container.cc: unexpected pos' nor a
SIGBUS from the pixel memmap (issue 20). Needs a small tmpfs: mounted here when the tests run as root."""
import multiprocessing as mp
import subprocess
import sys

import numpy as np
import pytest
import torch

from benchmark.atomic import torch_save, write_text
from benchmark.errors import DiskFull

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="tmpfs is Linux")


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs filled to the last byte."""
    fs = tmp_path / "fs"
    fs.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(fs)], capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e}); run as root to test full disks")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); run as root "
                    f"(or with CAP_SYS_ADMIN) to test full disks")
    try:
        with open(fs / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        (fs / "sub").mkdir()
        yield fs / "sub"
    finally:
        subprocess.run(["umount", "-l", str(fs)], capture_output=True, timeout=10)


def test_record_and_checkpoint_writes_say_no_space_left(full_disk):
    with pytest.raises(DiskFull, match=f"no space left on {full_disk}"):
        write_text(full_disk / "rec.json", "{}" * 10000)
    with pytest.raises(DiskFull, match=f"no space left on {full_disk}"):
        torch_save({"features": torch.zeros(100000)}, full_disk / "f.pt")
    assert sorted(p.name for p in full_disk.iterdir()) == []  # no temp file left behind


def _store_on_full_disk(root, q):
    from benchmark.data.store import PixelStore

    class Data:
        images = np.zeros((64, 40, 40, 3), dtype=np.uint8)
    try:
        PixelStore(root).get({"k": 1}, Data(), np.arange(64), 40, "bilinear")
        q.put("no error")
    except DiskFull as e:
        q.put(str(e))


def test_pixel_store_on_a_full_disk_is_an_error_not_sigbus(full_disk):
    filler = full_disk.parent / "filler"
    with open(filler, "r+b") as f:  # two pages free: the .npy header fits, the pixels do not
        f.truncate(filler.stat().st_size - 8192)
    ctx = mp.get_context("fork")  # a SIGBUS would kill this child, not the test session
    q = ctx.Queue()
    p = ctx.Process(target=_store_on_full_disk, args=(full_disk / "pixels", q))
    p.start()
    p.join(60)
    assert p.exitcode == 0, f"the writer died with exit code {p.exitcode} (-7 is SIGBUS)"
    assert q.get(timeout=5).startswith(f"no space left on {full_disk / 'pixels'}")
    assert list((full_disk / "pixels").iterdir()) == []


def test_run_with_cache_on_a_full_disk_ends_in_one_line(full_disk, tmp_path, capsys):
    from benchmark.cli import main
    (tmp_path / "z.yaml").write_text("models:\n  - {name: r, timm: test_resnet, pretrained: false}\n")
    (tmp_path / "d.yaml").write_text("settings: {protocols: [knn], target: knn}\ndatasets:\n"
                                     "  - {name: digits, packaged: digits, resolution: 32, max_train_per_class: 4}\n")
    rc = main(["run", "--zoo", str(tmp_path / "z.yaml"), "--datasets", str(tmp_path / "d.yaml"), "--out",
               str(tmp_path / "r"), "--cache-dir", str(full_disk), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith(f"bench: error: no space left on {full_disk}"), err
    assert len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "r").rglob("*.lock")) and not list((tmp_path / "r").rglob("digits/*/*.json"))
