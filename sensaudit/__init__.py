"""sensaudit: audit trained PyTorch scorers by their input sensitivity.

    from sensaudit import load_config, run_audit
    result, files = run_audit(load_config("configs/scorer_v1.yaml"))
    result.passed, result.table  # verdict, per-feature sensitivity

    from sensaudit import input_jacobian
    jac = input_jacobian(model, x)  # float [rows, outputs, features]

    from sensaudit import compare_models
    cmp = compare_models(load_config("configs/scorer_v2.yaml"), "old.pt2", "new.pt2")
"""

__version__ = "0.1.0"

from .api import audit, audit_frame, compare_models, run_audit, run_compare  # noqa: E402
from .compare import ComparisonResult  # noqa: E402
from .config import (  # noqa: E402
    AuditSettings,
    Config,
    ModelConfig,
    ProxyLimit,
    load_config,
    parse_config,
)
from .engine import input_jacobian, scores_and_jacobian  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError,
    DataError,
    ModelError,
    ModelLoadError,
    ReportError,
    SensauditError,
)
from .inputs.models import LoadedModel, load_model  # noqa: E402
from .results import AuditResult  # noqa: E402

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
