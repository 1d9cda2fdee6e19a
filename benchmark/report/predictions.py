"""Per-image test predictions of the accuracy-type proxies (linear probe, kNN), for `bench rank`'s bootstrap
intervals over the test images.

Records keep accuracies only, and the proxies stay pure functions returning metrics, so the predictions are made
again here from the inputs the proxy cell read (the cached features, the seed's train draw) and the
hyperparameters its record chose; each model's recomputed top-1 is checked against its record, and a model whose
top-1 does not come out the same gets no interval rather than a wrong one.
"""
from __future__ import annotations

import numpy as np
import torch

from ..proxies.knn import knn_predict
from ..proxies.linear import Problem, raw_predict, standardisation


def _linear(ctx, seed, train, val, test, hp: dict, chosen: dict, layer: str = "last") -> torch.Tensor:
    """The linear proxy's test path (proxies/linear.py): train+val standardised with their own statistics, the fit
    at the recorded wd warm-started from the train-only solution at that wd, argmax on test. That solution is the
    head the proxy cell saved for LP-FT (raw-feature space: re-expressed in train+val's standardisation); from zero
    instead, a weak wd on separable features takes many more steps to the same optimum. Other layers keep no head
    (LP-FT starts from the penultimate one): their refit starts from zero, and the top-1 check below holds it to
    the record's."""
    (tx, ty), (vx, vy), (ex, ey) = train, val, test
    tx, vx, full_y = tx.float(), vx.float(), torch.cat([ty, vy])
    std_on = hp.get("standardize", True)
    mean = torch.zeros(tx.shape[1], device=tx.device)
    std = torch.ones_like(mean)
    mean2, std2 = (standardisation(tx, vx) if std_on else (mean, std))
    start = None
    if layer == "last":
        w_raw, b_raw = (t.to(tx.device, torch.float32) for t in ctx.linear_head(seed))
        start = (w_raw * std2, b_raw + w_raw @ mean2)  # the raw-feature head in train+val's standardisation
    k = int(max(full_y.max(), ey.max())) + 1
    prob = Problem([tx, vx], full_y, k, hess_float32=hp.get("hessian_float32", True),
                   **(dict(shift=mean2, scale=std2) if std_on else {}))
    params, _ = prob.fit(float(chosen["wd"]), None if start is None else prob.rotate(start),
                         hp.get("max_iter", 10000), hp.get("tol", 1e-6))
    return raw_predict(prob.unrotate(params, torch.float64), mean2, std2, ex)


def _knn(ctx, seed, train, val, test, hp: dict, chosen: dict, layer: str = "last") -> torch.Tensor:
    """The kNN proxy exactly (proxies/knn.py): train+val as the memory bank, the recorded k and temperature."""
    (tx, ty), (vx, vy), (ex, ey) = train, val, test
    bank_x, bank_y = torch.cat([tx, vx]), torch.cat([ty, vy])
    n_classes = int(max(bank_y.max(), ey.max())) + 1
    return knn_predict(bank_x, bank_y, ex, int(chosen.get("k", hp.get("k", 20))),
                       float(chosen.get("temperature", hp.get("temperature", 0.07))), hp.get("chunk", 1024),
                       n_classes)


# proxy -> test predictions from (GroupContext, seed, train, val, test, hp, the record's chosen hyperparameters)
PREDICTORS = {"linear": _linear, "knn": _knn}


def correctness(ctx, proxy: str, seed: int, record: dict, hp: dict, device, layer: str = "last"
                ) -> tuple[np.ndarray | None, str]:
    """(per-test-image 0/1 correctness of `proxy` for ctx's model at `layer`, or None; why None). `ctx` is the
    runner's GroupContext of that (model, dataset): features come from its cache, as the proxy cell read them."""
    train = ctx.proxy_train(seed, device, layer)
    val = tuple(t.to(device) for t in ctx.features("val", layer=layer))
    test = tuple(t.to(device) for t in ctx.features("test", layer=layer))
    pred = PREDICTORS[proxy](ctx, seed, train, val, test, hp, record.get("hyperparameters") or {}, layer)
    correct = (pred == test[1]).cpu().numpy().astype(np.float64)
    recorded = (record.get("metrics") or {}).get("top1")
    if recorded is None or not np.isclose(100.0 * correct.mean(), recorded, rtol=0, atol=1e-9):
        return None, f"recomputed top-1 {100.0 * correct.mean():.2f} differs from the record's {recorded}"
    return correct, ""
