"""NCTI (Wang et al. 2023), pool-relative: three neural-collapse components of an LDA fit to PCA-64
features, each min-max scaled across the models of one dataset: mm(ncc) + mm(seli) − mm(vc)."""
from __future__ import annotations

import math

import torch

from .base import check_inputs, minmax_combine, register_proxy, undefined
from .classstats import class_index
from .moments import pca


def ncti_components(x, y, dims: int = 64) -> dict:
    """seli: nuclear norm of the centred LDA projection; ncc: mean LDA probability of the true class;
    vc: log Σ_k nuclear norm of class k's probability rows (lower = better). PCA is exact (the reference's
    sklearn PCA(64) is exact below 500 samples and randomized, unseeded, above); the LDA is sklearn's, as there."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    proj, var = pca(x, min(dims, *x.shape))
    if not bool((var > 0).any()):  # sklearn's LDA fails on it (a singular covariance): say why instead
        raise undefined("ncti", "the features have no variance, so the LDA of its PCA is undefined", x)
    temp = max(math.exp(-var[:32].sum().item()), 1e-10)
    clf = (LinearDiscriminantAnalysis(solver="svd") if temp == 1e-10
           else LinearDiscriminantAnalysis(solver="eigen", shrinkage=temp))
    z_np, y_np = proj.cpu().numpy(), y.cpu().numpy()
    low = torch.as_tensor(clf.fit_transform(z_np, y_np), device=x.device)
    prob = torch.as_tensor(clf.predict_proba(z_np), device=x.device)
    pos, k = class_index(y)
    seli = torch.linalg.matrix_norm(low - low.mean(0), ord="nuc").item()
    ncc = prob.gather(1, pos[:, None]).mean().item()
    vc = sum(torch.linalg.matrix_norm(prob[pos == c], ord="nuc").item() for c in range(k))
    return {"seli": seli, "ncc": ncc, "vc": math.log(vc)}


@register_proxy("ncti", primary="ncti", higher_is_better=True, needs_test=False,
                combine=minmax_combine({"ncc": 1.0, "seli": 1.0, "vc": -1.0}))
def ncti(train_x, train_y, test_x=None, test_y=None, **_):
    """NCTI (Wang et al. 2023): mm(ncc) + mm(seli) − mm(vc) over a dataset's models (components per model)."""
    check_inputs(train_x, train_y, "ncti", min_per_class=2)
    return ncti_components(train_x, train_y)
