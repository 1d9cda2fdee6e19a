"""Times GBC's reference (google-research stable_transfer, TensorFlow) on one feature file, in a Python that has
TensorFlow (bench's own environment does not need it):

    <tf-python> benchmarks/gbc_tf_reference.py <refs>/google_gbc features.npz

<refs>/google_gbc holds the authors' `gbc.py` and `features_targets_utils.py` (never committed). The pipeline's
steps as its experiment runs them: `shift_target_labels`, `pca_reduction(features, 64)` (sklearn full SVD, cast to
float32), `get_gbc_score(features, labels, 'spherical')`. Prints one JSON line: value and seconds."""
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

import numpy as np


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    ref, data = Path(sys.argv[1]), np.load(sys.argv[2])
    # gbc.py imports the experiment harness only for its caching decorator of get_train_gbc (not used here)
    harness = types.ModuleType("stable_transfer.transferability.transfer_experiment")
    harness.load_or_compute = lambda fn: fn
    for name in ("stable_transfer", "stable_transfer.transferability"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["stable_transfer.transferability"].transfer_experiment = harness
    sys.modules[harness.__name__] = harness
    gbc = load(ref / "gbc.py", "ref_gbc")
    utils = load(ref / "features_targets_utils.py", "ref_gbc_utils")
    x, y = data["x"], data["y"]
    gbc.get_gbc_score(np.eye(3, dtype=np.float32), np.array([0, 1, 1], np.int32), "spherical")  # TF warm-up
    t0 = time.perf_counter()
    labels = utils.shift_target_labels(y)
    feats = utils.pca_reduction(x, n_components=64) if x.shape[1] > 64 else x
    value = float(gbc.get_gbc_score(feats, labels, "spherical"))
    print(json.dumps({"value": value, "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()
