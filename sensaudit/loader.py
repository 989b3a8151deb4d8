"""Model files -> an eval-mode scorer on a device, without running untrusted code by default.

Formats, told apart by their contents rather than their names:

- ``torch.export`` programs (``.pt2``): a graph plus weights; loading runs no Python code of the
  file's author. Safe for files from elsewhere.
- TorchScript archives (``torch.jit.save``): TorchScript code runs inside the TorchScript
  interpreter, which can only call torch operators; no arbitrary Python.
- ``state_dict`` checkpoints (``torch.save(model.state_dict())``): read with
  ``weights_only=True``, which unpickles tensors and plain containers only; the class named by
  ``model.class`` (code you chose) builds the model.
- whole pickled modules (``torch.save(model)``): unpickling calls whatever the file names, so a
  malicious file runs its payload on load. Refused unless ``model.trust_pickle`` is set.
"""

from __future__ import annotations

import importlib
import sys
import zipfile
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .errors import ModelLoadError, first_line

FORMATS = ("torch.export", "torchscript", "state_dict", "pickle")


@dataclass
class LoadedModel:
    """A scorer ready to audit. ``module(x)`` maps float [rows, features] to scores."""

    module: Callable[[torch.Tensor], torch.Tensor]
    path: Path
    format: str
    device: torch.device
    dtype: torch.dtype


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when present, else CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("model.device is 'cuda' but no CUDA device is available here; "
                             "use 'auto' or 'cpu'")
    return torch.device(name)


def load_model(cfg: ModelConfig, *, trust_pickle: bool | None = None,
               device: torch.device | None = None) -> LoadedModel:
    """Load ``cfg.path`` into eval mode on ``device`` (default: ``cfg.device``)."""
    path = cfg.path
    trust = cfg.trust_pickle if trust_pickle is None else trust_pickle
    device = device or resolve_device(cfg.device)
    if not path.exists():
        raise ModelLoadError(f"{path}: model file not found (model.path)")
    if path.is_dir():
        raise ModelLoadError(f"{path}: model.path is a directory, not a model file")
    kind = _sniff(path)
    if kind == "torch.export":
        module = _load_exported(path, device)
    elif kind == "torchscript":
        module = _guard(path, "TorchScript archive", lambda: torch.jit.load(str(path),
                                                                            map_location=device))
    else:
        module, kind = _load_pickle_based(cfg, path, trust, device)
    if isinstance(module, torch.nn.Module) and kind != "torch.export":
        module.eval()
    return LoadedModel(module=module, path=path, format=kind, device=device,
                       dtype=_float_dtype(module))


def _sniff(path: Path) -> str:
    try:
        if not zipfile.is_zipfile(path):
            return "pickle"  # legacy torch.save or a bare pickle; weights_only decides
        names = zipfile.ZipFile(path).namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"{path}: cannot read model file ({exc})") from None
    if any(n.endswith("models/model.json") or "serialized_exported_program" in n for n in names):
        return "torch.export"
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    return "pickle"


def _guard(path: Path, what: str, load: Callable[[], Any]) -> Any:
    try:
        return load()
    except ModelLoadError:
        raise
    except Exception as exc:  # torch raises RuntimeError, zip and pickle errors for bad files
        raise ModelLoadError(f"{path}: cannot load {what}: corrupt or truncated file? "
                             f"({first_line(exc)})") from None


def _load_exported(path: Path, device: torch.device) -> torch.nn.Module:
    program = _guard(path, "torch.export program", lambda: torch.export.load(str(path)))
    module = program.module()
    # Exported graphs fix their train/eval behaviour at export time and refuse .eval().
    return module.to(device) if device.type != "cpu" else module


def _load_pickle_based(cfg: ModelConfig, path: Path, trust: bool, device: torch.device
                       ) -> tuple[Any, str]:
    try:
        obj = torch.load(str(path), map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - classified below
        if not _is_unsafe_pickle(exc):
            raise ModelLoadError(f"{path}: not a readable PyTorch model file: corrupt or "
                                 f"truncated? ({first_line(exc)})") from None
        if not trust:
            raise ModelLoadError(
                f"{path}: refusing to unpickle: the file holds pickled Python objects (a whole "
                "module or other code), and unpickling runs whatever code the file names. Save "
                "a safe format instead (torch.export.save to .pt2, torch.jit.save, or "
                "torch.save(model.state_dict()) with model.class), or set model.trust_pickle: "
                "true (--trust-pickle) only if you trust the file's source") from None
        return _load_trusted_pickle(path, device), "pickle"
    state = _state_dict_of(obj, path)
    if cfg.class_path is None:
        raise ModelLoadError(f"{path}: the file holds a state_dict (weights only); set "
                             "model.class: 'package.module:ClassName' (and model.kwargs) so the "
                             "model can be built")
    module = _build(cfg, path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ModelLoadError(f"{path}: state_dict does not match model.class "
                             f"'{cfg.class_path}': {detail[:300]}") from None
    return module.to(device), "state_dict"


def _load_trusted_pickle(path: Path, device: torch.device) -> Any:
    module = _guard(path, "pickled module",
                    lambda: torch.load(str(path), map_location=device, weights_only=False))
    if not callable(module):
        raise ModelLoadError(f"{path}: the pickle holds a {type(module).__name__}, not a model")
    return module


def _is_unsafe_pickle(exc: Exception) -> bool:
    import pickle

    return isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc).lower()


def _state_dict_of(obj: Any, path: Path) -> Mapping[str, torch.Tensor]:
    # Training checkpoints often wrap the weights: {"state_dict": ..., "epoch": ...}.
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and _all_tensors(inner):
                return inner
        if obj and _all_tensors(obj):
            return obj
    raise ModelLoadError(f"{path}: the file holds a {type(obj).__name__} that is neither a "
                         "state_dict of tensors nor a model")


def _all_tensors(mapping: Mapping) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in mapping.items())


def _build(cfg: ModelConfig, path: Path) -> torch.nn.Module:
    module_name, _, class_name = (cfg.class_path or "").partition(":")
    with _importable_from(cfg.path.parent):
        try:
            mod = importlib.import_module(module_name)
        except ImportError as exc:
            raise ModelLoadError(f"model.class '{cfg.class_path}': cannot import module "
                                 f"'{module_name}' ({first_line(exc)})") from None
    cls = getattr(mod, class_name, None)
    if cls is None:
        raise ModelLoadError(f"model.class '{cfg.class_path}': module '{module_name}' has no "
                             f"attribute '{class_name}'")
    try:
        module = cls(**dict(cfg.kwargs))
    except Exception as exc:  # the user's constructor may raise anything
        raise ModelLoadError(f"model.class '{cfg.class_path}': cannot construct it with "
                             f"model.kwargs {dict(cfg.kwargs)} ({first_line(exc)})") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"model.class '{cfg.class_path}' built a {type(module).__name__}, "
                             "not a torch.nn.Module")
    return module


@contextmanager
def _importable_from(folder: Path):
    """Let model.class name a module that sits beside the model file."""
    entry = str(folder.resolve())
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def _float_dtype(module: Any) -> torch.dtype:
    if isinstance(module, torch.nn.Module):
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point():
                return tensor.dtype
    return torch.float32

