from .sources import MODEL_SOURCES, LoadedModel, load_model
from . import checkpoint  # noqa: F401  (registers the `checkpoint` source)

__all__ = ["MODEL_SOURCES", "LoadedModel", "load_model"]
