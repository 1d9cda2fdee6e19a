"""Frozen-feature proxies: `get_proxy(name)(train_x, train_y, test_x, test_y, **hp) -> dict`."""
from . import collapse, knn, linear  # noqa: F401  (registration)
from . import etran, evidence, gbc, hscore, leep, ncti, parc, sfda, transrate  # noqa: F401  (estimators)
from .base import PROXIES, Proxy, get_proxy

__all__ = ["PROXIES", "Proxy", "get_proxy"]
