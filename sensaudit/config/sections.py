"""The YAML section parsers: ``model``, ``data``, ``audit``, ``compare`` and ``report``.

Each takes the section's raw mapping and returns its settings object
(:mod:`sensaudit.settings.sections`), refusing unknown keys and bad values with a one-line
ConfigError that names the file and the dotted key (:mod:`sensaudit.config.validate`). The
keys an extension declares (a method's ``audit.samples``, a check's ``audit.robustness`` or
``audit.checks.<name>``) are parsed from its declaration (:mod:`sensaudit.settings.options`),
found through the registries; the keys several checks share in
:mod:`sensaudit.config.check_sections`;
:func:`~sensaudit.config.load.parse_config` walks the top level and calls the parsers here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sensaudit.config import registries as registry
from sensaudit.config.check_sections import SHARED_KEYS, parse_check_keys
from sensaudit.config.registries import registered
from sensaudit.config.validate import _Validator
from sensaudit.core.errors import ConfigError, did_you_mean
from sensaudit.core.values import is_int
from sensaudit.settings.options import declared, parse_options
from sensaudit.settings.sections import (
    BASELINE_EXPECTED,
    BASELINE_KINDS,
    DEVICES,
    EXAMPLES,
    MISSCORED_RULES,
    ON_MISSING,
    REPORT_FORMATS,
    RULE_RANGE,
    TRANSFORMS,
    AuditSettings,
    CompareSettings,
    DataConfig,
    MisscoredRule,
    ModelConfig,
    ProxyLimit,
    ReportConfig,
)


def _model(v: _Validator, raw: Any) -> ModelConfig:
    m = v.mapping(raw, "model")
    v.keys(m, "model", required=("path",),
           optional=("class", "class_file", "kwargs", "trust_model_code", "output",
                     "output_names", "device", "features", "transform"),
           # the removed old name: an old config is told the new one, not just "unknown"
           renamed={"trust_pickle": "trust_model_code"})
    output = m.get("output")
    if output is not None and not isinstance(output, str):
        output = v.integer(output, "model.output", minimum=0)
    names = m.get("output_names")
    class_file = v.path(m["class_file"], "model.class_file") if "class_file" in m else None
    if class_file is not None and "class" not in m:
        raise ConfigError(f"{v.source}: model.class_file needs model.class: the name of the "
                          "class to build from it")
    return ModelConfig(
        path=v.path(m["path"], "model.path"),
        class_path=v.class_path(m["class"], "model.class", class_file) if "class" in m
        else None,
        class_file=class_file,
        kwargs=dict(v.mapping(m.get("kwargs", {}), "model.kwargs")),
        trust_model_code=v.boolean(m.get("trust_model_code", False), "model.trust_model_code"),
        output=output,
        output_names=v.names(names, "model.output_names") if names is not None else None,
        device=v.choice(m.get("device", "auto"), "model.device", DEVICES),
        features=(v.names(m["features"], "model.features") if m.get("features") is not None
                  else None),
        transform=v.choice(m.get("transform", "none"), "model.transform", TRANSFORMS),
    )


def _data(v: _Validator, raw: Any) -> DataConfig:
    d = v.mapping(raw, "data")
    v.keys(d, "data", required=("path",),
           optional=("features", "label", "id", "on_missing", "chunk_rows", "train"))
    features = d.get("features")
    return DataConfig(
        path=v.path(d["path"], "data.path"),
        features=v.names(features, "data.features") if features is not None else None,
        label=v.string(d["label"], "data.label") if d.get("label") is not None else None,
        id=v.string(d["id"], "data.id") if d.get("id") is not None else None,
        on_missing=v.choice(d.get("on_missing", "error"), "data.on_missing", ON_MISSING),
        chunk_rows=v.integer(d.get("chunk_rows", 100_000), "data.chunk_rows", minimum=1),
        train=v.path(d["train"], "data.train") if d.get("train") is not None else None,
    )


# The audit's own keys, before those its extensions declare (the methods' and the checks').
AUDIT_KEYS = ("proxies", "dominance_warning", "top_k", "examples_in_report", "batch_size",
              "allow_nonfinite", "method", "checks", "baseline")
SUSPECT_KEYS = ("misscored", "fail_on_suspects")


def _audit(v: _Validator, raw: Any) -> AuditSettings:
    a = v.mapping(raw if raw is not None else {}, "audit")
    method_keys = _method_keys()
    check_keys = _check_keys()
    v.keys(a, "audit", optional=audit_keys())
    proxies_raw = a.get("proxies")
    proxies_raw = [] if proxies_raw is None else proxies_raw  # `proxies: false` is no list
    if not isinstance(proxies_raw, list):
        v.fail("audit.proxies", "a list of {feature, max_share, max_rank}", proxies_raw)
    proxies = tuple(_proxy(v, p, f"audit.proxies[{i}]") for i, p in enumerate(proxies_raw))
    seen: set[str] = set()
    for i, proxy in enumerate(proxies):
        if proxy.feature in seen:
            raise ConfigError(f"{v.source}: audit.proxies[{i}].feature '{proxy.feature}' "
                              "is declared twice")
        seen.add(proxy.feature)
    batch_size = a.get("batch_size")
    method = v.choice(a.get("method", "gradient"), "audit.method", registered("methods"))
    return AuditSettings(
        proxies=proxies,
        dominance_warning=v.fraction(a.get("dominance_warning", 0.5), "audit.dominance_warning"),
        top_k=v.integer(a.get("top_k", 3), "audit.top_k", minimum=1),
        examples_in_report=v.integer(a.get("examples_in_report", 10), "audit.examples_in_report",
                                     minimum=0),
        batch_size=(v.integer(batch_size, "audit.batch_size", minimum=1)
                    if batch_size is not None else None),
        allow_nonfinite=v.boolean(a.get("allow_nonfinite", False), "audit.allow_nonfinite"),
        method=method,
        checks=_checks(v, a.get("checks", {})),
        **parse_check_keys(v, a),
        **{key: _declared(v, check_keys[key], a[key], f"audit.{key}", build=True)
           for key in check_keys if key in a},
        misscored=_misscored(v, a["misscored"]) if a.get("misscored") is not None else None,
        fail_on_suspects=(v.boolean(a["fail_on_suspects"], "audit.fail_on_suspects")
                          if a.get("fail_on_suspects") is not None else None),
        baseline=_baseline(v, a.get("baseline", "mean")),
        method_options=_method_options(v, a, method, method_keys),
    )


def audit_keys() -> tuple[str, ...]:
    """Every key ``audit:`` accepts: its own, then those its registered extensions declare."""
    return (*AUDIT_KEYS, *_method_keys(), *SUSPECT_KEYS, *SHARED_KEYS, *_check_keys())


def _declared(v: _Validator, options: type, raw: Any, where: str, *, build: bool = False
              ) -> Any:
    """An extension's options at ``where``, parsed from its declaration (a dict of the keys
    given, or with ``build`` the options object, defaults filled in); the messages name the
    config file."""
    try:
        values = parse_options(options, raw, where)
        return options(**values) if build else values
    except ConfigError as exc:
        raise ConfigError(f"{v.source}: {exc}") from None


def _method_keys() -> dict[str, list[str]]:
    """Each key a registered method declares (audit.samples), with the methods declaring it,
    in the registry's order."""
    keys: dict[str, list[str]] = {}
    taken = (*AUDIT_KEYS, *SUSPECT_KEYS, *SHARED_KEYS, *_check_keys())
    for name, cls in registry.methods().items():
        for option in declared(cls.Options) if cls.Options is not None else ():
            if option.key in taken:
                raise TypeError(f"method {name} declares the option audit.{option.key}, which "
                                "is a key of the audit itself: name it differently")
            keys.setdefault(option.key, []).append(name)
    return keys


def _method_options(v: _Validator, a: Mapping[str, Any], method: str,
                    method_keys: Mapping[str, list[str]]) -> dict[str, Any]:
    """The chosen method's own keys from ``audit``, checked against its declaration. A key of
    another method (audit.steps under smoothgrad) would be silently ignored: refused, as an
    unknown key is refused."""
    for key, users in method_keys.items():
        if key in a and method not in users:
            raise ConfigError(f"{v.source}: audit.{key} is a setting of audit.method "
                              f"{' or '.join(users)}, not of '{method}'")
    options = registry.methods()[method].Options
    if options is None:
        return {}
    return dict(_declared(v, options, {k: a[k] for k in method_keys if k in a}, "audit"))


def _check_keys() -> dict[str, type]:
    """The options of the registered checks with an audit key of their own (audit.robustness),
    by that key, in the registry's order."""
    keys = {check.config_key: check.Options for check in registry.checks()
            if check.config_key is not None and check.Options is not None}
    fields = {f.name for f in dataclasses.fields(AuditSettings)}
    for key in keys:
        if key not in fields:  # the settings would have nowhere to keep its options
            raise TypeError(f"a check declares config_key '{key}', which AuditSettings has no "
                            "field for: leave config_key None and read the options from "
                            "audit.checks.<name> (Check.configured)")
    return keys


def _misscored(v: _Validator, raw: Any) -> MisscoredRule:
    m = v.mapping(raw, "audit.misscored")
    v.keys(m, "audit.misscored", optional=MISSCORED_RULES)
    if len(m) != 1:
        v.fail("audit.misscored", "a mapping with exactly one of " + ", ".join(MISSCORED_RULES),
               dict(m))
    (kind, value), = m.items()
    try:
        MisscoredRule(kind, value)  # the one place its range is checked
    except ConfigError:
        v.fail(f"audit.misscored.{kind}", RULE_RANGE[kind], value)
    return MisscoredRule(kind, float(value))


def _baseline(v: _Validator, raw: Any) -> str | dict[str, float]:
    if isinstance(raw, Mapping):
        v.mapping(raw, "audit.baseline")
        if not raw:
            v.fail("audit.baseline", BASELINE_EXPECTED, raw)
        return {name: v.finite(value, f"audit.baseline.{name}")
                for name, value in raw.items()}
    if not isinstance(raw, str) or raw not in BASELINE_KINDS:
        v.fail("audit.baseline", BASELINE_EXPECTED, raw)
    return raw


def _checks(v: _Validator, raw: Any) -> dict[str, Mapping[str, Any]]:
    """``audit.checks``: each named check's options, parsed from the options it declares (a
    check configured with a key of its own is refused when the checks are built)."""
    checks = v.mapping(raw if raw is not None else {}, "audit.checks")
    known = {check.name: check for check in registry.checks()}
    parsed: dict[str, Mapping[str, Any]] = {}
    for name, options in checks.items():
        if name not in known:
            raise ConfigError(f"{v.source}: unknown check '{name}' in audit.checks"
                              f"{did_you_mean(name, tuple(known))} "
                              f"(registered: {', '.join(known)})")
        where = f"audit.checks.{name}"
        declaration = known[name].Options
        if declaration is None or known[name].config_key is not None:
            parsed[name] = dict(v.mapping(options if options is not None else {}, where))
        else:
            parsed[name] = _declared(v, declaration, options, where)
    return parsed


def _proxy(v: _Validator, raw: Any, key: str) -> ProxyLimit:
    p = v.mapping(raw, key)
    v.keys(p, key, required=("feature",), optional=("max_share", "max_rank", "reason"))
    if "max_share" not in p and "max_rank" not in p:
        raise ConfigError(f"{v.source}: {key} needs a limit: max_share, max_rank or both")
    return ProxyLimit(
        feature=v.string(p["feature"], f"{key}.feature"),
        max_share=v.fraction(p["max_share"], f"{key}.max_share") if "max_share" in p else None,
        max_rank=v.integer(p["max_rank"], f"{key}.max_rank", minimum=1) if "max_rank" in p
        else None,
        reason=v.string(p["reason"], f"{key}.reason") if "reason" in p else None,
    )


def _compare(v: _Validator, raw: Any) -> CompareSettings:
    settings: CompareSettings = _declared(v, CompareSettings, raw, "compare", build=True)
    return settings


def _report(v: _Validator, raw: Any, default_dir: Path) -> ReportConfig:
    r = v.mapping(raw if raw is not None else {}, "report")
    writers = registry.formats()
    configurable = {name: writer.Options for name, writer in writers.items()
                    if writer.Options is not None}
    v.keys(r, "report", optional=("dir", "formats", "examples", *configurable))
    formats = r.get("formats", list(REPORT_FORMATS))
    known = tuple(writers)
    if not isinstance(formats, list) or not formats:
        v.fail("report.formats", f"a non-empty list drawn from {list(known)}", formats)
    chosen = tuple(v.choice(f, f"report.formats[{i}]", known)
                   for i, f in enumerate(formats))
    # Whether png/html can be written here is checked when reports are written
    # (check_report_formats): --format may replace these formats first.
    examples = r.get("examples", "auto")
    if not (examples in EXAMPLES or is_int(examples) and examples >= 1):
        v.fail("report.examples", "auto, all, top, none or a row limit (an integer >= 1)",
               examples)
    options = {}
    for name, declaration in configurable.items():
        if name not in r:
            continue
        if name not in chosen:  # its options would be silently ignored
            raise ConfigError(f"{v.source}: report.{name} sets options of a format that "
                              f"report.formats does not ask for (formats: {', '.join(chosen)})")
        options[name] = _declared(v, declaration, r[name], f"report.{name}")
    return ReportConfig(dir=v.path(r["dir"], "report.dir") if "dir" in r else default_dir,
                        formats=tuple(dict.fromkeys(chosen)), examples=examples,
                        options=options)


def _default_report_dir(source: str | Path, base_dir: Path) -> Path:
    """Without report.dir: reports/<config name> beside the config, so two configs in one
    folder (scorer_v1.yaml, scorer_v2.yaml) keep their reports apart."""
    name = Path(str(source)).name
    stem = Path(name).stem if name.endswith((".yaml", ".yml")) else ""
    return Path(os.path.normpath(base_dir / "reports" / stem))


def check_report_formats(config_source: object, formats: tuple[str, ...]) -> None:
    """The config's report.formats, as they stand when reports are written (after any
    --format), must be writable here."""
    check_available(formats, f"{config_source or '<config>'}: report.formats")


def check_available(formats: tuple[str, ...], where: str) -> None:
    """A format whose optional packages are missing (png, html without matplotlib) is
    refused before any data is read, with the command that installs them."""
    from sensaudit.reports import unavailable

    for name in formats:
        reason = unavailable(name)
        if reason is not None:
            raise ConfigError(f"{where}: '{name}' {reason}")
