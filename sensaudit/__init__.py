"""sensaudit: audit trained PyTorch scorers by their input sensitivity.

    from sensaudit import load_config, run_audit
    result, files = run_audit(load_config("configs/scorer_v1.yaml"))
    result.passed, result.table  # verdict, per-feature sensitivity

    from sensaudit import input_jacobian, attribute
    jac = input_jacobian(model, x)  # float [rows, outputs, features]
    ig = attribute(model, x, method="integrated_gradients", baseline="mean")  # same shape

    from sensaudit import compare_models, audit_frame, compare_frames, write_reports
    cmp = compare_models(load_config("configs/scorer_v2.yaml"), "old.pt2", "new.pt2")
    result = audit_frame(model, frame, label="quality")  # a module, exported or load_model's
    write_reports(compare_frames(old, new, frame), "reports/cmp", ["markdown", "json"])

    from sensaudit import resample_file
    resample_file("train.csv", "resampled.csv", proxy="copy_length", label="quality")
"""

import importlib as _importlib
import typing as _typing

from sensaudit._version import __version__
from sensaudit.config.load import Config, load_config, parse_config
from sensaudit.core.errors import (
    ConfigError,
    DataError,
    ModelError,
    ModelLoadError,
    ReportError,
    SensauditError,
)
from sensaudit.settings.checks import (
    Expectation,
    FeatureGroup,
    LayerHealthSettings,
    LinearitySettings,
    RobustnessSettings,
)
from sensaudit.settings.sections import AuditSettings, MisscoredRule, ModelConfig, ProxyLimit

if _typing.TYPE_CHECKING:
    from sensaudit.api import (
        attribute,
        audit,
        audit_frame,
        compare_frames,
        compare_models,
        run_audit,
        run_compare,
        write_reports,
    )
    from sensaudit.core.jacobian import input_jacobian, scores_and_jacobian
    from sensaudit.inputs.models import LoadedModel, load_model
    from sensaudit.resample import decorrelate, resample_file
    from sensaudit.results.audit_result import AuditResult
    from sensaudit.results.comparison import ComparisonResult, OutputAgreement, ProxyIncrease

# Names whose modules import torch (seconds): loaded on first use, so that `sensaudit --help`
# and `--version`, which import this package, do not pay for torch.
_LAZY = {
    "attribute": ".api", "audit": ".api", "audit_frame": ".api", "compare_frames": ".api",
    "compare_models": ".api", "run_audit": ".api", "run_compare": ".api",
    "write_reports": ".api", "ComparisonResult": ".results.comparison",
    "OutputAgreement": ".results.comparison", "ProxyIncrease": ".results.comparison",
    "input_jacobian": ".core.jacobian", "scores_and_jacobian": ".core.jacobian",
    "LoadedModel": ".inputs.models", "load_model": ".inputs.models",
    "AuditResult": ".results.audit_result",
    "decorrelate": ".resample", "resample_file": ".resample",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sensaudit' has no attribute '{name}'")
    from sensaudit.core.torch_support import require_supported_torch

    require_supported_torch()
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AuditResult",
    "AuditSettings",
    "ComparisonResult",
    "Config",
    "ConfigError",
    "DataError",
    "Expectation",
    "FeatureGroup",
    "LayerHealthSettings",
    "LinearitySettings",
    "LoadedModel",
    "MisscoredRule",
    "ModelConfig",
    "ModelError",
    "ModelLoadError",
    "OutputAgreement",
    "ProxyIncrease",
    "ProxyLimit",
    "ReportError",
    "RobustnessSettings",
    "SensauditError",
    "__version__",
    "attribute",
    "audit",
    "audit_frame",
    "compare_frames",
    "compare_models",
    "decorrelate",
    "input_jacobian",
    "load_config",
    "load_model",
    "parse_config",
    "resample_file",
    "run_audit",
    "run_compare",
    "scores_and_jacobian",
    "write_reports",
]
