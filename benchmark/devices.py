"""The torch device a command runs on. torch is imported only when a device is actually needed, so building the
CLI parser (and `bench --help`) stays fast."""
from __future__ import annotations

from .errors import ConfigError


def cuda_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - a broken CUDA install means: no CUDA
        return False


def default_device() -> str:
    return "cuda" if cuda_available() else "cpu"


def resolve_device(name: str | None, flag: str = "--device") -> str:
    """`name` checked (a torch device string whose backend is present), or the default when None."""
    if not name:
        return default_device()
    import torch
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{flag} '{name}' is not a torch device; pass cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not cuda_available():
        raise ConfigError(f"{flag} '{name}': no CUDA device is available here; pass --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"{flag} '{name}': only {torch.cuda.device_count()} CUDA device(s) here")
    return name
