"""sensaudit: audit trained PyTorch scorers by their input sensitivity.

    from sensaudit import load_config, run_audit
    result, files = run_audit(load_config("configs/scorer_v1.yaml"))
    result.passed, result.table  # verdict, per-feature sensitivity

    from sensaudit import input_jacobian, attribute
    jac = input_jacobian(model, x)  # float [rows, outputs, features]
    ig = attribute(model, x, method="integrated_gradients", baseline="mean")  # same shape

    from sensaudit import compare_models
    cmp = compare_models(load_config("configs/scorer_v2.yaml"), "old.pt2", "new.pt2")
"""

from ._version import __version__
from .api import attribute, audit, audit_frame, compare_models, run_audit, run_compare
from .compare import ComparisonResult
from .config import (
    AuditSettings,
    Config,
    ModelConfig,
    ProxyLimit,
    load_config,
    parse_config,
)
from .engine import input_jacobian, scores_and_jacobian
from .errors import (
    ConfigError,
    DataError,
    ModelError,
    ModelLoadError,
    ReportError,
    SensauditError,
)
from .inputs.models import LoadedModel, load_model
from .results import AuditResult

__all__ = [
    "AuditResult",
    "AuditSettings",
    "ComparisonResult",
    "Config",
    "ConfigError",
    "DataError",
    "LoadedModel",
    "ModelConfig",
    "ModelError",
    "ModelLoadError",
    "ProxyLimit",
    "ReportError",
    "SensauditError",
    "__version__",
    "attribute",
    "audit",
    "audit_frame",
    "compare_models",
    "input_jacobian",
    "load_config",
    "load_model",
    "parse_config",
    "run_audit",
    "run_compare",
    "scores_and_jacobian",
]
