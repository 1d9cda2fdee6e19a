"""Fail fast when weights are neither cached nor reachable.

huggingface_hub and torch.hub retry for ~45 s on a machine without network; a 1.5 s TCP probe of the host
answers the same question before any download is attempted.
"""
from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from ..errors import CellError

PROBE_TIMEOUT_S = 1.5


@functools.lru_cache(maxsize=None)
def host_reachable(host: str, port: int = 443) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def require_download(url_or_host: str, model: str, fix: str) -> None:
    """Raise a one-line CellError if `url_or_host` cannot be fetched right now."""
    host = urlparse(url_or_host).hostname or url_or_host
    if hf_offline() and "huggingface" in host:
        raise CellError(f"model '{model}': weights are not in the local Hugging Face cache and HF_HUB_OFFLINE "
                        f"is set; {fix}")
    if not host_reachable(host):
        raise CellError(f"model '{model}': weights are not cached and {host} is unreachable (offline?); {fix}")


def torch_hub_checkpoint(url: str) -> Path:
    import torch.hub
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
