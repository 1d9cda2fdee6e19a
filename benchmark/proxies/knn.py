"""Weighted k-nearest-neighbour classifier on cosine similarity (DINO's evaluation protocol)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks import integer, positive
from .base import accuracies, check_inputs, register_proxy


def cosine_topk(train_x, test_x, k, chunk=1024):
    """(similarities, indices) of the k most cosine-similar train rows for every test row.

    Chunks of test rows keep memory at O(chunk x N_train) instead of the full similarity matrix.
    """
    train_n = F.normalize(train_x.float(), dim=1)
    sims, idxs = [], []
    for start in range(0, len(test_x), chunk):
        q = F.normalize(test_x[start:start + chunk].float(), dim=1)
        s, i = (q @ train_n.T).topk(min(k, len(train_n)), dim=1)
        sims.append(s)
        idxs.append(i)
    return torch.cat(sims), torch.cat(idxs)


def knn_predict(train_x, train_y, test_x, k=20, temperature=0.07, chunk=1024, n_classes=None):
    n_classes = n_classes or int(train_y.max()) + 1
    sim, idx = cosine_topk(train_x, test_x, k, chunk)
    votes = torch.zeros(len(sim), n_classes, device=sim.device, dtype=sim.dtype)
    votes.scatter_add_(1, train_y[idx], (sim / temperature).exp())
    return votes.argmax(1)


@register_proxy("knn", primary="top1", higher_is_better=True, percent=True, hp_keys=("k", "temperature"), best=100.0,
                ranges=dict(k=integer(1), temperature=positive(), chunk=integer(1)))
def knn(train_x, train_y, test_x=None, test_y=None, *, k=20, temperature=0.07, chunk=1024, val_x=None,
        val_y=None):
    """Cosine kNN, k=20, votes weighted by exp(sim/0.07), train+val as the memory bank.

    An all-zero feature row has cosine similarity 0 to everything (F.normalize leaves it zero): defined, and all
    its neighbours vote equally (chance-level on dead features)."""
    check_inputs(train_x, train_y, "knn")
    if test_x is None:
        raise ValueError("knn needs test features")
    if val_x is not None:
        train_x, train_y = torch.cat([train_x, val_x]), torch.cat([train_y, val_y])
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    pred = knn_predict(train_x, train_y, test_x, k, temperature, chunk, n_classes)
    return {**accuracies(pred, test_y), "k": min(k, len(train_x)), "temperature": temperature}
