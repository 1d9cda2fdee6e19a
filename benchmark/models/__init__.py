from .sources import MODEL_SOURCES, LoadedModel, load_model

__all__ = ["MODEL_SOURCES", "LoadedModel", "load_model"]
