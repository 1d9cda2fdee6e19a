"""Read checkpoint files without running code from them.

`torch.load(weights_only=True)` first. SSL training scripts also pickle objects next to the weights (DINO and MAE
an argparse.Namespace, VICReg `__main__.exclude_bias_and_norm` inside the optimizer state), which weights_only
refuses and a full unpickle can only import from the author's script. We then unpickle with the standard library's
documented "restricting globals" hook: the globals torch's weights_only unpickler allows resolve as usual, every
other global becomes an inert stub class, so nothing from the file is imported or called and only tensors are used.
A full unpickle happens only for an entry with `trust_pickle: true`.
"""
from __future__ import annotations

import pickle
import types
from pathlib import Path

import torch

from ..config import ModelEntry
from ..errors import CellError
from .file_check import check_checkpoint_file

DEFAULT_MAX_GB = ModelEntry.max_checkpoint_gb

# Python's pickle VM also calls append/extend/__setitem__/__setstate__ on the objects it builds: stubs accept and
# keep them, so a stubbed object in a list, dict or BUILD opcode cannot fail the load or reach real code.


class PickleStub:
    """Stands for a global the file names but we will not import; instances only store their arguments."""
    _stub_of = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["_stub_args"] = (args, kwargs)
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["_stub_state"] = state

    def __setitem__(self, key, value):
        self.__dict__.setdefault("_stub_items", {})[key] = value

    def append(self, value):
        self.__dict__.setdefault("_stub_list", []).append(value)

    def extend(self, values):
        for v in values:
            self.append(v)

    def __repr__(self):
        return f"<stub {self._stub_of}>"


def _allowed_globals() -> dict:
    """The allowlist of torch's own weights_only unpickler (tensor rebuilders, dtypes, OrderedDict, ...)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        allowed = dict(_get_allowed_globals())
    except ImportError:  # private API: fall back to what a plain state dict needs
        allowed = {"collections.OrderedDict": __import__("collections").OrderedDict,
                   "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
                   "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
                   "torch.Size": torch.Size, "torch.device": torch.device}
    for g in torch.serialization.get_safe_globals():  # what the user allowed with torch.serialization
        obj, name = g if isinstance(g, tuple) else (g, f"{g.__module__}.{g.__qualname__}")
        allowed[name] = obj
    return allowed


def restricted_pickle_module(stubbed: set) -> types.ModuleType:
    """A `pickle_module` for torch.load whose Unpickler resolves only allowlisted globals; the names it stubbed are
    added to `stubbed`."""
    allowed = _allowed_globals()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            full = f"{module}.{name}"
            if full in allowed:
                return allowed[full]
            stubbed.add(full)
            return type(name.rsplit(".", 1)[-1], (PickleStub,), {"_stub_of": full})

    mod = types.ModuleType("bench_restricted_pickle")
    mod.Unpickler = Unpickler
    mod.load = lambda f, **kw: Unpickler(f, **kw).load()
    mod.__name__ = "bench_restricted_pickle"
    return mod


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def load_checkpoint_file(path: Path, trust_pickle: bool, model: str, mmap: bool = False,
                         max_gb: float = DEFAULT_MAX_GB) -> tuple[object, dict]:
    """(object in the file, how it was read): {'unpickle': 'weights_only' | 'restricted' | 'full', 'stubbed': [...]}.
    The file's format and expanded size are checked first (file_check.py); trust_pickle=False never runs code."""
    check_checkpoint_file(path, max_gb, model)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap), {"unpickle": "weights_only"}
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise CellError(f"model '{model}': {path} is not a PyTorch checkpoint or is damaged "
                            f"({_first_line(e)}); replace the file") from None
    except Exception as e:  # noqa: BLE001 - whatever torch's parser trips on inside a damaged file
        raise CellError(f"model '{model}': {path} is not a PyTorch checkpoint or is damaged ({_first_line(e)}); "
                        f"replace the file") from None
    if trust_pickle:
        try:  # the entry said so: the file may import and call anything
            return torch.load(path, map_location="cpu", weights_only=False), {"unpickle": "full"}
        except Exception as e:  # e.g. a function pickled from the author's __main__
            raise CellError(f"model '{model}': full unpickle of {path} failed ({type(e).__name__}: {e}); remove "
                            f"trust_pickle to load its tensors only") from None
    stubbed: set = set()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False,
                         pickle_module=restricted_pickle_module(stubbed))
    except Exception as e:
        raise CellError(f"model '{model}': cannot read checkpoint {path} even with pickled objects stubbed "
                        f"({type(e).__name__}: {e}); set trust_pickle: true only if you trust the file") from None
    return obj, {"unpickle": "restricted", "stubbed": sorted(stubbed)}


def load_note(how: dict) -> str | None:
    if how["unpickle"] == "restricted":
        return (f"checkpoint pickles objects weights_only refuses ({', '.join(how['stubbed'])}): loaded tensors only, "
                f"those became inert stubs and nothing from the file ran")
    if how["unpickle"] == "full":
        return "checkpoint fully unpickled (trust_pickle: true): the file could run code"
    return None
