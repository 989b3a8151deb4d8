"""YAML config -> validated, frozen config objects. The one place that knows the schema.

Unknown keys are errors, with a did-you-mean suggestion, because a typo such as ``max_shares``
must never silently switch a gate off; so are duplicate keys (:mod:`sensaudit.config.yaml_loader`).
Every message names the file, the dotted key, what was expected and what was found. Relative
paths resolve against the config file's folder, so a config works from whatever directory CI
runs it in.

This module reads a file and walks its top level; the rest of the schema sits beside it:

- :mod:`sensaudit.settings.sections`: the frozen settings objects and the schema's limits.
- :mod:`sensaudit.config.sections`: the parsers of the sections (model, data, audit, ...).
- :mod:`sensaudit.settings.checks`: the checks' ``audit:`` keys, their settings and parsers.
- :mod:`sensaudit.config.validate`: the type checks behind every message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensaudit.config.ray import RaySettings, parse_engine
from sensaudit.config.sections import _audit, _compare, _data, _default_report_dir, _model, _report
from sensaudit.config.validate import _Validator
from sensaudit.config.yaml_loader import load_yaml
from sensaudit.core.errors import ConfigError
from sensaudit.inputs.regular import MAX_CONFIG_BYTES, read_capped
from sensaudit.settings.sections import (
    AuditSettings,
    CompareSettings,
    DataConfig,
    ModelConfig,
    ReportConfig,
)

__all__ = ["Config", "load_config", "parse_config"]


@dataclass(frozen=True)
class Config:
    data: DataConfig
    report: ReportConfig
    model: ModelConfig | None = None  # not needed by `compare`, which names its two models
    audit: AuditSettings = field(default_factory=AuditSettings)
    compare: CompareSettings = field(default_factory=CompareSettings)
    source: Path | None = None  # the YAML file, for messages
    engine: str = "local"  # where the audit runs: local or ray (sensaudit.config.ray)
    ray: RaySettings = field(default_factory=RaySettings)


def load_config(path: str | Path, *, require_model: bool = False) -> Config:
    """Read and validate a YAML config file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: cannot read config file (it is a directory)")
    # Read whole and parsed: a FIFO or device (which would block or never end) is refused,
    # and so is a file far larger than any config.
    try:
        text = read_capped(path, "the config file", ConfigError, MAX_CONFIG_BYTES
                           ).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    raw = load_yaml(text, path)
    return parse_config(raw, source=path, base_dir=path.parent, require_model=require_model)


def parse_config(
    raw: Any,
    *,
    source: str | Path = "<config>",
    base_dir: str | Path = ".",
    require_model: bool = False,
) -> Config:
    """Validate an already-parsed mapping (what :func:`~sensaudit.config.yaml_loader.load_yaml`
    returns).

    ``model`` is optional (``compare`` names its two models); ``require_model`` refuses a
    config without it, for callers that need one up front.
    """
    v = _Validator(str(source), Path(base_dir))
    top = v.mapping(raw, "")
    v.keys(top, "", required=("data",), optional=("report", "model", "audit", "compare",
                                                    "engine", "ray"))
    if require_model and "model" not in top:
        raise ConfigError(f"{source}: missing required key 'model'")
    engine, ray = parse_engine(v, top)
    return Config(
        model=_model(v, top["model"]) if "model" in top else None,
        data=_data(v, top["data"]),
        audit=_audit(v, top.get("audit", {})),
        compare=_compare(v, top.get("compare", {})),
        report=_report(v, top.get("report", {}), _default_report_dir(source, Path(base_dir))),
        source=Path(source),
        engine=engine,
        ray=ray,
    )
