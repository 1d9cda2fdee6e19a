"""The proxy registry and the input checks every proxy shares. Proxies are pure functions on tensors."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import CellError
from ..registry import Registry

PROXIES: Registry = Registry("proxy")


@dataclass(frozen=True)
class Proxy:
    name: str
    fn: Callable[..., dict]
    primary: str  # metric key the report correlates
    higher_is_better: bool  # direction of `primary`
    needs_test: bool  # False: computed on train features alone
    percent: bool  # True when `primary` is an accuracy in %
    hp_keys: tuple  # output keys that are chosen hyperparameters, not scores
    doc: str
    ranges: dict = field(default_factory=dict)  # hyperparameter -> checks.Rule, checked when the config loads
    needs_source_probs: bool = False  # takes source_probs=[N, C_s], the source classifier's probabilities
    combine: Callable | None = None  # pool-relative: list of per-model component dicts -> list of scores
    # The best value `primary` can take (a number, or a function of (num_classes, feature_dim)); None: unbounded.
    # Models at it cannot be told apart by this proxy: `bench rank` flags a pool saturated there.
    best: Callable | float | None = None

    def best_possible(self, num_classes: int, feature_dim: int) -> float | None:
        return self.best(num_classes, feature_dim) if callable(self.best) else self.best

    def __call__(self, train_x, train_y, test_x=None, test_y=None, **hp) -> dict:
        return self.fn(train_x, train_y, test_x, test_y, **hp)


def register_proxy(name: str, *, primary: str, higher_is_better: bool, needs_test: bool = True,
                   percent: bool = False, hp_keys: tuple = (), ranges: dict | None = None,
                   needs_source_probs: bool = False, combine: Callable | None = None,
                   best: Callable | float | None = None):
    def deco(fn):
        doc = (fn.__doc__ or "").strip().splitlines()[0]
        PROXIES.register(name)(Proxy(name, fn, primary, higher_is_better, needs_test, percent, hp_keys, doc,
                                     dict(ranges or {}), needs_source_probs, combine, best))
        return fn
    return deco


def get_proxy(name: str) -> Proxy:
    return PROXIES.get(name)


def minmax_combine(weights: dict):
    """A pool-relative score: Σ_c w_c · (v_c − min_pool v_c)/(max_pool v_c − min_pool v_c) per model.

    A component constant over the pool (one model, or ties) carries no ranking information and counts 0
    (the authors' scripts divide by zero there)."""
    def combine(components: list) -> list:
        import numpy as np
        total = np.zeros(len(components))
        for key, w in weights.items():
            v = np.array([c[key] for c in components], dtype=np.float64)
            span = v.max() - v.min() if len(v) else 0.0
            if span > 0:
                total += w * (v - v.min()) / span
        return total.tolist()
    return combine


def check_inputs(x: torch.Tensor, y: torch.Tensor, what: str, min_per_class: int = 1) -> None:
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise CellError(f"{what}: expected features [N, D] and labels [N], got {tuple(x.shape)} and {tuple(y.shape)}")
    # One reduction is NaN/inf if any element is (torch.isfinite(x).all() materialises two full-size
    # temporaries: 250x slower on a busy CPU); only then, or on overflow of the sum, check element-wise.
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(1).sum())
        raise CellError(f"{what}: {bad} feature rows contain NaN/inf; the backbone diverged or the input "
                        f"normalisation is wrong for this model")
    classes, counts = torch.unique(y, return_counts=True)
    if len(classes) < 2:
        raise CellError(f"{what}: needs at least two classes, got {len(classes)}; check the dataset's labels")
    if counts.min() < min_per_class:
        c = classes[counts.argmin()].item()
        raise CellError(f"{what}: class {c} has {counts.min().item()} sample(s), needs at least {min_per_class}; "
                        f"raise max_train_per_class/shots or drop the class")


DIED = "the backbone's features died at this resolution (see feature_health in the record)"


def degenerate(x: torch.Tensor) -> str:
    """'all-zero features' or 'constant features' when every row of x is the same vector (nothing to measure),
    else ''. One min/max pass; proxies call it only to explain a value they found undefined."""
    if x.numel() == 0:
        return ""
    lo, hi = torch.aminmax(x, dim=0)
    if bool((hi != lo).any()):
        return ""
    return "all-zero features" if not bool(hi.any()) else "constant features"


def undefined(what: str, why: str, x: torch.Tensor) -> CellError:
    """The CellError of a proxy whose value is undefined on these features, naming dead features when they are."""
    dead = degenerate(x)
    return CellError(f"{what}: {why} ({dead}): {DIED}" if dead else f"{what}: {why}")


def accuracies(pred: torch.Tensor, y: torch.Tensor) -> dict:
    """top1 and mean per-class accuracy, in %."""
    correct = (pred == y).double()
    classes = torch.unique(y)
    per_class = torch.stack([correct[y == c].mean() for c in classes])
    return {"top1": 100.0 * correct.mean().item(), "mean_per_class": 100.0 * per_class.mean().item()}
