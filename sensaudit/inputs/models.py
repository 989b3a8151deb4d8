"""Model files -> an eval-mode scorer on a device, without running untrusted code by default.

Formats, told apart by their contents rather than their names. Each untrusted file is checked
against an allowlist of what torch writes for a plain model before torch reads it; trusted mode
(``model.trust_model_code``) skips the checks, for files you trust like code you run.

- ``torch.export`` programs (``.pt2``): a graph plus weights. ``torch.export.load`` alone can
  run code from a crafted file, so :mod:`.pt2_safety` checks the archive before loading and its
  graph after.
- TorchScript archives (``torch.jit.save``): code, which TorchScript compiles and runs (some of
  it while loading); :mod:`.torchscript_safety` accepts only tensor math, before loading.
- ``state_dict`` checkpoints (``torch.save(model.state_dict())``): read with
  ``weights_only=True``, which unpickles tensors and plain containers only; ``model.class``
  (code you chose: an installed module, or ``model.class_file``) builds the model.
- whole pickled modules (``torch.save(model)``): unpickling calls whatever the file names, so a
  malicious file runs its payload on load. Refused unless trusted.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import sys
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from sensaudit.core.errors import ModelLoadError, first_line
from sensaudit.inputs import pt2_safety, torchscript_safety
from sensaudit.inputs.archive_checks import DamagedArchive
from sensaudit.inputs.model_inputs import SelectedColumns
from sensaudit.inputs.regular import check_regular
from sensaudit.settings.sections import ModelConfig

TRUST_HINT = ("set model.trust_model_code: true (--trust-model-code) only if you trust the "
              "file like code you run")
# model.class_file modules get a private name of their own: two models' arch.py never collide,
# and no module anyone else imports is replaced.
_class_file_ids = itertools.count()


@dataclass
class LoadedModel:
    """A scorer ready to audit. ``module(x)`` maps float [rows, features] to scores."""

    module: Callable[[torch.Tensor], torch.Tensor]
    path: Path
    format: str  # "torch.export", "torchscript", "state_dict", "pickle" (or "in-memory")
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


def load_model(cfg: ModelConfig, *, trust_model_code: bool | None = None,
               device: torch.device | None = None) -> LoadedModel:
    """Load ``cfg.path`` into eval mode on ``device`` (default: ``cfg.device``).

    ``trust_model_code`` (default: ``cfg.trust_model_code``): treat the file like code you run,
    i.e. unpickle whole modules and skip the .pt2 and TorchScript checks.
    """
    path = cfg.path
    trust = cfg.trust_model_code if trust_model_code is None else trust_model_code
    try:
        device = device or resolve_device(cfg.device)
    except ModelLoadError as exc:  # name the model the setting belongs to
        raise ModelLoadError(f"{path}: {exc}") from None
    if not path.exists():
        raise ModelLoadError(f"{path}: model file not found (model.path)")
    if path.is_dir():
        raise ModelLoadError(f"{path}: model.path is a directory, not a model file")
    # A FIFO or device would block the read, or never end: refused before it is opened.
    if check_regular(path, "model.path", ModelLoadError).st_size == 0:
        raise ModelLoadError(f"{path}: the model file is empty (model.path)")
    kind = _sniff(path)
    if kind == "torch.export":
        module = _load_exported(path, device, trust)
    elif kind == "torchscript":
        module = _load_torchscript(path, device, trust)
    else:
        module, kind = _load_pickle_based(cfg, path, trust, device)
    if isinstance(module, torch.nn.Module) and kind != "torch.export":
        module.eval()
    dtype = float_dtype(module)
    if cfg.columns is not None:  # compare: this model's columns of the union both read
        module = SelectedColumns(module, cfg.columns, device)
    return LoadedModel(module=module, path=path, format=kind, device=device, dtype=dtype)


def _sniff(path: Path) -> str:
    try:
        if not zipfile.is_zipfile(path):
            with path.open("rb") as handle:
                start = handle.read(4)
            if start[:1] != b"\x80" and start != b"PK\x03\x04":
                # Neither a zip archive nor a binary pickle (legacy torch.save): not handed to
                # any unpickler, whose error would be noise such as "KeyError: 116".
                raise ModelLoadError(f"{path}: not a PyTorch model file: expected a zip "
                                     "archive (torch.export.save, torch.jit.save, torch.save) "
                                     "or a legacy torch.save file")
            if start == b"PK\x03\x04":
                # torch.save, torch.jit.save and torch.export.save all write zip archives;
                # one whose directory (at the end) is missing was cut short.
                raise ModelLoadError(f"{path}: corrupt or truncated model file: it starts as a "
                                     "zip archive (as torch.save, torch.jit.save and "
                                     "torch.export.save write) but its end is missing or "
                                     "damaged")
            return "pickle"  # legacy torch.save or a bare pickle; weights_only decides
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
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


def _load_exported(path: Path, device: torch.device, trust: bool) -> torch.nn.Module:
    # torch.export.load alone runs code from a crafted .pt2 (it unpickles, evaluates shape
    # expressions, execs guard code); see pt2_safety. Checked before loading and after.
    if trust:
        program = _guard(path, "torch.export program", lambda: torch.export.load(str(path)))
    else:
        try:
            pt2_safety.check_archive(path)
            program = torch.export.load(str(path))
            pt2_safety.check_graph_ops(program)
        except DamagedArchive as exc:
            raise ModelLoadError(f"{path}: cannot load torch.export program: corrupt or "
                                 f"truncated file? ({exc})") from None
        except pt2_safety.UnsafeExport as exc:
            raise ModelLoadError(
                f"{path}: refusing to load this torch.export file: {exc}. A crafted .pt2 can "
                "run code when loaded or run; re-export the model with torch.export.save, or "
                f"{TRUST_HINT}") from None
        except Exception as exc:  # torch raises many types for a damaged archive
            raise ModelLoadError(f"{path}: cannot load torch.export program: corrupt or "
                                 f"truncated file? ({first_line(exc)})") from None
    if device.type != "cpu":
        # Device placements are baked into the graph's nodes too; this pass rewrites them
        # all, where a plain module.to(device) would move the weights only.
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    # Exported graphs fix their train/eval behaviour at export time and refuse .eval().
    # Untrusted: no guard function, which torch builds as Python source and exec's; the
    # module's input checks (a pre-hook) still run.
    module: torch.nn.Module = _guard(
        path, "torch.export program",
        lambda: program.module() if trust else program.module(check_guards=False))
    return module


def _load_torchscript(path: Path, device: torch.device, trust: bool) -> Any:
    if not trust:
        try:
            torchscript_safety.check_archive(path)
        except torchscript_safety.UnsafeTorchScript as exc:
            raise ModelLoadError(
                f"{path}: refusing to load this TorchScript file: {exc}. TorchScript is code "
                "that runs when the file is loaded and run, and sensaudit accepts only tensor "
                "math from standard layers; convert the model to .pt2 with torch.export.save, "
                f"or {TRUST_HINT}") from None
        except Exception as exc:  # DamagedArchive, or zipfile's errors on a damaged archive
            raise ModelLoadError(f"{path}: cannot load TorchScript archive: corrupt or "
                                 f"truncated file? ({first_line(exc)})") from None
    return _guard(path, "TorchScript archive", lambda: _jit_load(path, device))


def _jit_load(path: Path, device: torch.device) -> Any:
    with warnings.catch_warnings():
        # torch 2.14 deprecates torch.jit: a FutureWarning on stderr for every load would read
        # as a problem with the user's file, which TorchScript files still are not.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        return torch.jit.load(str(path), map_location=device)


def _load_pickle_based(cfg: ModelConfig, path: Path, trust: bool, device: torch.device
                       ) -> tuple[Any, str]:
    try:
        with warnings.catch_warnings():
            # torch warns (on stderr) about pickle protocols it did not write; the error
            # below says what matters, on one line.
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - classified below
        if not _is_unsafe_pickle(exc, path):
            raise ModelLoadError(f"{path}: not a readable PyTorch model file: corrupt, "
                                 f"truncated or another format? ({_load_detail(exc)})") from None
        if not trust:
            raise ModelLoadError(
                f"{path}: refusing to unpickle: the file holds pickled Python objects (a whole "
                "module or other code), and unpickling runs whatever code the file names. Save "
                "a safe format instead (torch.export.save to .pt2, or "
                "torch.save(model.state_dict()) with model.class), or "
                f"{TRUST_HINT}") from None
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


def _load_detail(exc: Exception) -> str:
    """torch.load's reason in a few words: its weights_only errors bury it in advice."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = text.split(marker, 1)[1].split("Check the documentation", 1)[0]
        return " ".join(reason.split())[:200] or type(exc).__name__
    message = first_line(exc) if text.strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _is_unsafe_pickle(exc: Exception, path: Path) -> bool:
    """Did weights_only refuse a pickle that names code (rather than fail on a broken file)?"""
    import pickle

    if not isinstance(exc, pickle.UnpicklingError):
        return False
    if "unsupported global" in str(exc).lower():
        return True  # the file names a class or function: a pickled module, or a payload
    # Not every weights_only failure is a pickled module: a text or garbage file must be
    # reported as not a model file rather than "refused as unsafe". A pickle written
    # by pickle.dump (protocol 2+, b"\x80" first) that weights_only cannot parse may still
    # hold code, so it stays refused.
    try:
        with path.open("rb") as handle:
            return handle.read(1) == b"\x80"
    except OSError:
        return False


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


def _all_tensors(mapping: Mapping[object, object]) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in mapping.items())


def _build(cfg: ModelConfig, path: Path) -> torch.nn.Module:
    class_path = cfg.class_path or ""
    if cfg.class_file is not None:
        mod = _import_class_file(cfg.class_file, path)
        module_name, class_name = cfg.class_file.stem, class_path.rpartition(":")[2]
    else:
        module_name, _, class_name = class_path.partition(":")
        mod = _import_installed(module_name, cfg, path)
    cls = getattr(mod, class_name, None)
    if cls is None:
        raise ModelLoadError(f"{path}: model.class '{class_path}': module '{module_name}' "
                             f"has no attribute '{class_name}'")
    # Checked before anything is called: model.class names a class to build, and a name such
    # as 'os:system' or 'subprocess:getoutput' (a function, with the command in model.kwargs)
    # must never run. Only a torch.nn.Module subclass is constructed.
    if not isinstance(cls, type):
        raise ModelLoadError(f"{path}: model.class '{class_path}' names a "
                             f"{type(cls).__name__}, not a torch.nn.Module class; it is not "
                             "called")
    if not issubclass(cls, torch.nn.Module):
        raise ModelLoadError(f"{path}: model.class '{class_path}' is not a torch.nn.Module "
                             "subclass; it is not built")
    try:
        module = cls(**dict(cfg.kwargs))
    except Exception as exc:  # the user's constructor may raise anything
        raise ModelLoadError(f"{path}: model.class '{class_path}': cannot construct it "
                             f"with model.kwargs {dict(cfg.kwargs)} ({first_line(exc)})") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"{path}: model.class '{class_path}' built a "
                             f"{type(module).__name__}, not a torch.nn.Module")
    return module


def _import_installed(module_name: str, cfg: ModelConfig, path: Path) -> ModuleType:
    # Only from installed packages and the interpreter's own sys.path: a folder beside the
    # model file (whoever wrote it) is never put first, so a planted mypkg/ or torch/ there is
    # not imported in place of the real one. Importing runs the module's code: an installed
    # package is code the user chose, but the standard library holds no torch.nn.Module and
    # some of it acts on import (antigravity opens a browser, this prints): never imported.
    top = module_name.partition(".")[0]
    if top in sys.stdlib_module_names:
        raise ModelLoadError(f"{path}: model.class '{cfg.class_path}': module '{module_name}' "
                             "is part of Python's standard library, which holds no "
                             "torch.nn.Module; it is not imported")
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module's own code raises
        hint = ""
        beside = cfg.path.parent / f"{top}.py"
        if isinstance(exc, ModuleNotFoundError) and beside.is_file():
            hint = (f"; modules beside the model file are not imported: set model.class_file: "
                    f"{beside.name} to use that file")
        raise ModelLoadError(f"{path}: model.class '{cfg.class_path}': cannot import "
                             f"module '{module_name}' ({type(exc).__name__}: "
                             f"{first_line(exc)}){hint}") from None


def _import_class_file(file: Path, path: Path) -> ModuleType:
    """Run ``model.class_file`` as a module of its own, under a private name nobody imports."""
    if not file.is_file():
        raise ModelLoadError(f"{path}: model.class_file {file} is not a file")
    name = f"_sensaudit_class_file_{next(_class_file_ids)}_{file.stem}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"{path}: model.class_file {file} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    # Registered (under its unique name) before it runs, as the import system does: dataclasses
    # and pickling look classes up in sys.modules by their module's name.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # whatever the file's own code raises
        del sys.modules[name]
        raise ModelLoadError(f"{path}: model.class_file {file}: cannot import it "
                             f"({type(exc).__name__}: {first_line(exc)})") from None
    return module


def float_dtype(module: Any) -> torch.dtype:
    """The dtype the model computes in: its first floating parameter or buffer's."""
    if isinstance(module, torch.nn.Module):
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point():
                return tensor.dtype
    return torch.float32


def narrowest_dtype(models: list[LoadedModel]) -> torch.dtype:
    """The dtype whose range every model's inputs must fit (values too large are named):
    models that read the same chunks get them in this dtype."""
    dtypes = [m.dtype for m in models]
    return min(dtypes, key=lambda d: torch.finfo(d).max if d.is_floating_point else 0.0)
