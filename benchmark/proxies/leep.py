"""Estimators from a source model's predictions over source labels z: LEEP (Nguyen et al. 2020), NCE (Tran et
al. 2019), and N-LEEP (Li et al. 2021), whose "source labels" are Gaussian-mixture components of the
features instead. All higher = more transferable."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import CellError
from ..checks import integer, number
from .base import check_inputs, register_proxy
from .classstats import class_index, float64
from .moments import pca


def eep_value(probs: torch.Tensor, y: torch.Tensor, log: bool = True) -> float:
    """mean_i [log] Σ_z P̂(y_i|z) P_i(z), with P̂(y, z) = (1/N) Σ_{i: y_i = y} P_i(z).

    Two passes over the probabilities in row blocks of about 2 MB in float64 (on the CPU): converting the
    stored float32 [N, C_s] table whole and gathering an [N, C_s] table of P̂(y_i|·) is memory-bound (5x
    slower at N = 10,000, C_s = 1,000); only the true class's prediction is formed (N·C_s products, not the
    reference's [N, K] table)."""
    pos, k = class_index(y)
    n, cs = probs.shape
    block = n if probs.device.type != "cpu" else max(16, (1 << 18) // cs)
    joint = torch.zeros(k, cs, dtype=torch.float64, device=probs.device)
    for s in range(0, n, block):
        joint.index_add_(0, pos[s:s + block], float64(probs[s:s + block]))
    joint /= n
    pz = joint.sum(0, keepdim=True)
    cond = torch.where(pz > 0, joint / pz.clamp_min(torch.finfo(joint.dtype).tiny), 0.0)  # P̂(y|z); unused z: 0
    eep = torch.empty(n, dtype=torch.float64, device=probs.device)
    for s in range(0, n, block):
        eep[s:s + block] = (float64(probs[s:s + block]) * cond[pos[s:s + block]]).sum(1)
    return (eep.log() if log else eep).mean().item()


def nce_value(source_labels: torch.Tensor, y: torch.Tensor) -> float:
    """−H(Y|Z) of the empirical joint of hard source labels and target labels."""
    zpos, cs = class_index(source_labels)
    pos, k = class_index(y)
    joint = torch.bincount(pos * cs + zpos, minlength=k * cs).view(k, cs).to(torch.float64) / len(y)
    cond = joint / joint.sum(0, keepdim=True)  # every kept z has P̂(z) > 0
    return torch.xlogy(joint, cond).sum().item()  # Σ P̂(y,z) log P̂(y|z); empty cells count 0


def _source_probs(source_probs, n, what):
    if source_probs is None:
        raise CellError(f"{what}: needs the source model's class probabilities (source_probs=[N, C_s]); the "
                        f"runner passes them for checkpoints that keep a classifier")
    if source_probs.ndim != 2 or len(source_probs) != n:
        raise CellError(f"{what}: source_probs must be [N={n}, C_s], got {tuple(source_probs.shape)}")
    return source_probs


@register_proxy("leep", primary="leep", higher_is_better=True, needs_test=False, needs_source_probs=True)
def leep(train_x, train_y, test_x=None, test_y=None, *, source_probs=None, log: bool = True):
    """LEEP (Nguyen et al. 2020): log expected empirical prediction from the source classifier's probabilities."""
    p = _source_probs(source_probs, len(train_y), "leep")
    check_inputs(p, train_y, "leep")  # the probabilities are this estimator's data, not the features
    return {"leep": eep_value(p, train_y, log)}


@register_proxy("nce", primary="nce", higher_is_better=True, needs_test=False, needs_source_probs=True)
def nce(train_x, train_y, test_x=None, test_y=None, *, source_probs=None):
    """NCE (Tran et al. 2019): −H(Y|Z) with Z the source classifier's argmax label."""
    p = _source_probs(source_probs, len(train_y), "nce")
    check_inputs(p, train_y, "nce")
    return {"nce": nce_value(p.argmax(1), train_y)}


def pca_variance(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """Projections onto the fewest principal components explaining `fraction` of the variance (sklearn's rule
    for PCA(n_components=fraction): first index where the cumulative ratio exceeds it)."""
    proj, var = pca(x, min(x.shape))
    ratio = (var / var.sum()).cumsum(0)
    keep = int(torch.searchsorted(ratio, torch.tensor([fraction], dtype=ratio.dtype, device=ratio.device),
                                  right=True).item()) + 1
    return proj[:, :keep]


@register_proxy("nleep", primary="nleep", higher_is_better=True, needs_test=False,
                ranges={"seed": integer(0), "variance": number(0, 1, lo_open=True),
                        "components_per_class": integer(1)})
def nleep(train_x, train_y, test_x=None, test_y=None, *, seed: int = 0, components_per_class: int = 5,
          variance: float = 0.8, log: bool = True):
    """N-LEEP (Li et al. 2021): LEEP on the posteriors of a Gaussian mixture (5 per class) fit to PCA-80% features.

    Defined on dead features: identical rows get identical mixture posteriors, so P̂(y|z) is the class prior and
    the value the mean log prior of the true class (−log K on balanced classes), not NaN."""
    check_inputs(train_x, train_y, "nleep")
    from sklearn.mixture import GaussianMixture  # the reference's estimator: EM with k-means init, full covariances
    z = pca_variance(train_x, variance).cpu().numpy()
    k = int(torch.unique(train_y).numel())
    gmm = GaussianMixture(n_components=components_per_class * k, random_state=np.random.RandomState(seed)).fit(z)
    probs = torch.as_tensor(gmm.predict_proba(z), device=train_x.device)
    return {"nleep": eep_value(probs, train_y, log)}
