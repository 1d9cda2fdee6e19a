import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def bench_home(tmp_path_factory):
    """Remapped packaged weights go to a per-session folder, never the user's cache."""
    home = tmp_path_factory.mktemp("bench_home")
    os.environ["BENCH_HOME"] = str(home)
    return home


CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA device here"))]


@pytest.fixture(params=DEVICES)
def device(request):
    """Tensor-touching tests run on the CPU always and on CUDA where there is one."""
    return request.param


def clusters(n_per_class=40, k=4, d=16, spread=1.0, sep=10.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * sep
    y = torch.arange(k).repeat_interleave(n_per_class)
    x = centres[y] + spread * torch.randn(len(y), d, generator=g)
    return x, y


REFERENCE = Path(__file__).resolve().parent / "reference"  # values the tests compare against, in the repo


def reference_file(*parts) -> Path:
    """A file of tests/reference (see its PROVENANCE.md). Missing is a failure, never a skip: a suite that skips
    its reference comparisons would pass without checking what the README advertises."""
    path = REFERENCE.joinpath(*parts)
    if not path.is_file():
        pytest.fail(f"reference file missing: {path}; restore tests/reference from git (see PROVENANCE.md)")
    return path


@pytest.fixture
def one_thread():
    """Tiny models: a second thread only adds barrier waits (30x slower on a loaded 2-core host, measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TINY_ZOO = "models:\n  - {name: r, timm: test_resnet, pretrained: false}\n"
TINY_KNN_DATA = """\
settings: {protocols: [knn, nc1], seeds: [0], target: knn, batch_size: 32}
datasets:
  - {name: digits, packaged: digits, resolution: 32, max_train_per_class: 6, max_test_per_class: 3}
"""


@pytest.fixture
def tiny_knn_grid(tmp_path):
    """(zoo, datasets, records folder) of a one-model, one-dataset grid of two cheap proxies."""
    from benchmark.config import load_datasets, load_zoo
    (tmp_path / "z.yaml").write_text(TINY_ZOO)
    (tmp_path / "d.yaml").write_text(TINY_KNN_DATA)
    return load_zoo(tmp_path / "z.yaml"), load_datasets(tmp_path / "d.yaml"), tmp_path / "r"
