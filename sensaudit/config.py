"""YAML config -> validated, frozen config objects. The one place that knows the schema.

Unknown keys are errors, with a did-you-mean suggestion, because a typo such as ``max_shares``
must never silently switch a gate off; so are duplicate keys (:mod:`sensaudit.yaml_loader`).
Every message names the file, the dotted key, what was expected and what was found. Relative
paths resolve against the config file's folder, so a config works from whatever directory CI
runs it in.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_checks import (
    CHECK_KEYS,
    Expectation,
    FeatureGroup,
    LayerHealthSettings,
    LinearitySettings,
    RobustnessSettings,
    parse_check_keys,
)
from .config_ray import RaySettings, parse_engine
from .errors import ConfigError, brief, describe, did_you_mean
from .yaml_loader import load_yaml

DEVICES = ("auto", "cpu", "cuda")
REPORT_FORMATS = ("csv", "markdown", "json")
ON_MISSING = ("error", "drop")
# model.transform: applied to the model's whole output row, before model.output selects one
# (softmax needs every logit of the row; sigmoid is per output, so the order is moot for it).
TRANSFORMS = ("none", "sigmoid", "softmax")
# report.examples: which per-row rows examples.csv / examples.parquet hold (or a row limit).
EXAMPLES = ("all", "top", "none")
# Bootstrap memory grows with the replicate count: [samples, features] moments and
# [samples, outputs, features] sums, all float64, and each chunk's [samples, chunk rows]
# weights. A few thousand replicates settle a 95% interval; beyond 100000 only memory grows.
MAX_BOOTSTRAP_SAMPLES = 100_000
# The bootstrap hashes the seed as a uint64 (compare.PoissonBootstrap).
MAX_SEED = 2**64 - 1
# audit.baseline: a kind, or a mapping feature -> value (sensaudit.baselines).
BASELINE_KINDS = ("mean", "zero", "median")
# audit.samples / audit.steps: each row costs that many gradients; beyond this only time grows.
MAX_SAMPLES = MAX_STEPS = 10_000


@dataclass(frozen=True)
class ModelConfig:
    path: Path
    # For state_dict checkpoints: "pkg.module:Class", imported from installed packages; or,
    # with class_file, "Class" (or "stem:Class") defined in that one .py file.
    class_path: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    # The file is trusted like code you run: whole pickled modules are unpickled and the .pt2
    # and TorchScript checks are skipped (YAML also accepts the old name, trust_pickle).
    trust_model_code: bool = False
    output: int | str | None = None  # select one output by index or by name
    output_names: tuple[str, ...] | None = None
    device: str = "auto"
    features: tuple[str, ...] | None = None  # the model's input columns, in its order
    class_file: Path | None = None
    transform: str = "none"  # TRANSFORMS: audit probabilities instead of logits


@dataclass(frozen=True)
class DataConfig:
    path: Path
    features: tuple[str, ...] | None = None  # None: every numeric column but label and id
    label: str | None = None
    id: str | None = None
    on_missing: str = "error"
    chunk_rows: int = 100_000
    # Where ``features`` came from, for messages: data.features, model.features, the model file.
    features_key: str = "data.features"


@dataclass(frozen=True)
class ProxyLimit:
    """A feature that must not drive the score, with the limits it must stay under."""

    feature: str
    max_share: float | None = None
    max_rank: int | None = None  # flagged when its rank is this or better (rank 1 = top)
    reason: str | None = None

    def __post_init__(self) -> None:
        # The YAML path checks these with file and key; this guards ProxyLimit built in Python.
        if self.max_share is None and self.max_rank is None:
            raise ConfigError(f"ProxyLimit('{self.feature}') needs a limit: max_share, "
                              "max_rank or both")
        if self.max_share is not None and not 0 <= self.max_share <= 1:
            raise ConfigError(f"ProxyLimit('{self.feature}'): max_share must be a number in "
                              f"[0, 1] (got {describe(self.max_share)})")
        if self.max_rank is not None and self.max_rank < 1:
            raise ConfigError(f"ProxyLimit('{self.feature}'): max_rank must be an integer >= 1 "
                              f"(got {describe(self.max_rank)})")


# audit.misscored: which rule says a row was scored wrong (needs data.label).
MISSCORED_RULES = ("abs_error_above", "top_error_quantile", "threshold")


@dataclass(frozen=True)
class MisscoredRule:
    """A row is misscored when |score - label| > value (``abs_error_above``), when its
    |score - label| is among the top ``value`` fraction of rows (``top_error_quantile``), or
    when score and label fall on different sides of ``value`` (``threshold``)."""

    kind: str = "top_error_quantile"
    value: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in MISSCORED_RULES:
            raise ConfigError(f"MisscoredRule: kind must be one of {', '.join(MISSCORED_RULES)} "
                              f"(got {describe(self.kind)})")
        ok = isinstance(self.value, (int, float)) and not isinstance(self.value, bool) and (
            math.isfinite(self.value))
        if ok and self.kind == "top_error_quantile":
            ok = 0 < self.value < 1
        elif ok and self.kind == "abs_error_above":
            ok = self.value >= 0
        if not ok:
            raise ConfigError(f"MisscoredRule: {self.kind} must be {_RULE_RANGE[self.kind]} "
                              f"(got {describe(self.value)})")


_RULE_RANGE = {"abs_error_above": "a number >= 0",
               "top_error_quantile": "a number strictly between 0 and 1",
               "threshold": "a finite number"}


@dataclass(frozen=True)
class AuditSettings:
    proxies: tuple[ProxyLimit, ...] = ()
    dominance_warning: float = 0.5  # warn when an undeclared feature holds more share than this
    top_k: int = 3  # top drivers listed per example
    examples_in_report: int = 10
    batch_size: int | None = None  # None: chosen from the model's size
    allow_nonfinite: bool = False
    method: str = "gradient"  # an attribution method named in sensaudit.methods.METHODS
    # The reference point of per-row explanations: mean, zero, median or {feature: value}
    # (features not named take their mean).
    baseline: str | Mapping[str, float] = "mean"
    samples: int = 50  # smoothgrad: noisy copies per row
    noise: float = 0.2  # smoothgrad: noise scale, in feature standard deviations
    seed: int = 0  # smoothgrad: the noise is a function of (seed, row number, sample)
    steps: int = 50  # integrated_gradients: Gauss-Legendre points along the path
    # Options of checks registered without a key of their own, by check name (README,
    # "Extending"): each check validates its own options.
    checks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The checks beyond the gradient ranking (sensaudit.config_checks; None: not asked for).
    threshold: float | None = None  # decision threshold on the score
    groups: tuple[FeatureGroup, ...] = ()
    expect: tuple[Expectation, ...] = ()
    robustness: RobustnessSettings | None = None
    linearity: LinearitySettings | None = None
    layer_health: LayerHealthSettings | None = None
    # The suspected-proxies check (checks/suspects.py): its rule for misscored rows (None: the
    # default rule), and whether a suspect fails the audit.
    misscored: MisscoredRule | None = None
    fail_on_suspects: bool = False

    def __post_init__(self) -> None:
        # The YAML path checks these with file and key; this guards settings built in Python
        # (audit_frame), where a bad value would otherwise surface as a confusing crash.
        def bad(key: str, expected: str) -> ConfigError:
            return ConfigError(f"AuditSettings: {key} must be {expected} "
                               f"(got {describe(getattr(self, key))})")

        if not _is_int(self.top_k) or self.top_k < 1:
            raise bad("top_k", "an integer >= 1")
        if not _is_int(self.examples_in_report) or self.examples_in_report < 0:
            raise bad("examples_in_report", "an integer >= 0")
        if self.batch_size is not None and (not _is_int(self.batch_size) or self.batch_size < 1):
            raise bad("batch_size", "an integer >= 1 or None")
        if not (isinstance(self.dominance_warning, (int, float))
                and not isinstance(self.dominance_warning, bool)
                and 0 <= self.dominance_warning <= 1):
            raise bad("dominance_warning", "a number in [0, 1]")
        if self.method not in registered("methods"):
            raise bad("method", "one of " + ", ".join(registered("methods")))
        if self.threshold is not None and not (isinstance(self.threshold, (int, float))
                                               and not isinstance(self.threshold, bool)
                                               and math.isfinite(self.threshold)):
            raise bad("threshold", "a finite number or None")
        if not _baseline_ok(self.baseline):
            raise bad("baseline", BASELINE_EXPECTED)
        if not _is_int(self.samples) or not 1 <= self.samples <= MAX_SAMPLES:
            raise bad("samples", f"an integer from 1 to {MAX_SAMPLES}")
        if not (_is_number(self.noise) and self.noise > 0):
            raise bad("noise", "a finite number > 0")
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise bad("seed", "an integer from 0 to 2**64 - 1")
        if not _is_int(self.steps) or not 1 <= self.steps <= MAX_STEPS:
            raise bad("steps", f"an integer from 1 to {MAX_STEPS}")


BASELINE_EXPECTED = "one of mean, zero, median, or a mapping feature -> number"


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _baseline_ok(value: object) -> bool:
    if isinstance(value, Mapping):
        return bool(value) and all(isinstance(k, str) and _is_number(v)
                                   for k, v in value.items())
    return value in BASELINE_KINDS


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class CompareSettings:
    max_proxy_share_increase: float | None = None  # fail when a proxy's share grows by more
    # 1000: with 200 the 95% interval's tails rest on 5 replicates each, and it covered only
    # 93-94% in simulations (tests/test_compare_noise.py).
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    top_k: int = 3
    min_change: float = 2.0  # share points: a smaller change is never marked, whatever its noise


@dataclass(frozen=True)
class ReportConfig:
    dir: Path
    formats: tuple[str, ...] = REPORT_FORMATS
    examples: str | int = "all"  # EXAMPLES, or at most this many rows (the first audited)


@dataclass(frozen=True)
class Config:
    data: DataConfig
    report: ReportConfig
    model: ModelConfig | None = None  # not needed by `compare`, which names its two models
    audit: AuditSettings = field(default_factory=AuditSettings)
    compare: CompareSettings = field(default_factory=CompareSettings)
    source: Path | None = None  # the YAML file, for messages
    engine: str = "local"  # where the audit runs: local or ray (sensaudit.config_ray)
    ray: RaySettings = field(default_factory=RaySettings)


def load_config(path: str | Path, *, require_model: bool = False) -> Config:
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
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
    """Validate an already-parsed mapping (what :func:`~sensaudit.yaml_loader.load_yaml`
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


def _model(v: _Validator, raw: Any) -> ModelConfig:
    m = v.mapping(raw, "model")
    v.keys(m, "model", required=("path",),
           optional=("class", "class_file", "kwargs", "trust_model_code", "output",
                     "output_names", "device", "trust_pickle", "features",
                     "transform"))
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
        trust_model_code=_trust_model_code(v, m),
        output=output,
        output_names=v.names(names, "model.output_names") if names is not None else None,
        device=v.choice(m.get("device", "auto"), "model.device", DEVICES),
        features=(v.names(m["features"], "model.features") if m.get("features") is not None
                  else None),
        transform=v.choice(m.get("transform", "none"), "model.transform", TRANSFORMS),
    )


def _trust_model_code(v: _Validator, m: Mapping[str, Any]) -> bool:
    # trust_pickle is the old name, kept so existing configs keep working; it means the same.
    values = {key: v.boolean(m[key], f"model.{key}")
              for key in ("trust_model_code", "trust_pickle") if key in m}
    if len(set(values.values())) > 1:
        raise ConfigError(f"{v.source}: model.trust_pickle is the old name of "
                          "model.trust_model_code; give one of them")
    return any(values.values())


def _data(v: _Validator, raw: Any) -> DataConfig:
    d = v.mapping(raw, "data")
    v.keys(d, "data", required=("path",),
           optional=("features", "label", "id", "on_missing", "chunk_rows"))
    features = d.get("features")
    return DataConfig(
        path=v.path(d["path"], "data.path"),
        features=v.names(features, "data.features") if features is not None else None,
        label=v.string(d["label"], "data.label") if d.get("label") is not None else None,
        id=v.string(d["id"], "data.id") if d.get("id") is not None else None,
        on_missing=v.choice(d.get("on_missing", "error"), "data.on_missing", ON_MISSING),
        chunk_rows=v.integer(d.get("chunk_rows", 100_000), "data.chunk_rows", minimum=1),
    )


def _audit(v: _Validator, raw: Any) -> AuditSettings:
    a = v.mapping(raw if raw is not None else {}, "audit")
    v.keys(a, "audit", optional=("proxies", "dominance_warning", "top_k", "examples_in_report",
                                 "batch_size", "allow_nonfinite", "method", "checks",
                                 "baseline", "samples", "noise", "seed", "steps", "misscored",
                                 "fail_on_suspects", *CHECK_KEYS))
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
    _method_keys(v, a, method)
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
        misscored=_misscored(v, a["misscored"]) if a.get("misscored") is not None else None,
        fail_on_suspects=v.boolean(a.get("fail_on_suspects", False), "audit.fail_on_suspects"),
        baseline=_baseline(v, a.get("baseline", "mean")),
        samples=v.integer(a.get("samples", 50), "audit.samples", minimum=1,
                          maximum=MAX_SAMPLES),
        noise=v.positive(a.get("noise", 0.2), "audit.noise"),
        seed=v.integer(a.get("seed", 0), "audit.seed", minimum=0, maximum=MAX_SEED,
                       maximum_text="2**64 - 1"),
        steps=v.integer(a.get("steps", 50), "audit.steps", minimum=1, maximum=MAX_STEPS),
    )


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
        v.fail(f"audit.misscored.{kind}", _RULE_RANGE[kind], value)
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


def _method_keys(v: _Validator, a: Mapping[str, Any], method: str) -> None:
    """A setting of another method (audit.steps under smoothgrad) would be silently
    ignored: refuse it, as an unknown key is refused."""
    from .methods import METHODS

    for key in ("samples", "noise", "seed", "steps"):
        if key not in a or key in METHODS[method].settings_keys:
            continue
        users = [name for name, cls in METHODS.items() if key in cls.settings_keys]
        raise ConfigError(f"{v.source}: audit.{key} is a setting of audit.method "
                          f"{' or '.join(users)}, not of '{method}'")


def _checks(v: _Validator, raw: Any) -> dict[str, Mapping[str, Any]]:
    checks = v.mapping(raw if raw is not None else {}, "audit.checks")
    known = registered("checks")
    for name, options in checks.items():
        if name not in known:
            raise ConfigError(f"{v.source}: unknown check '{name}' in audit.checks"
                              f"{did_you_mean(name, known)} (registered: {', '.join(known)})")
        v.mapping(options if options is not None else {}, f"audit.checks.{name}")
    return {name: dict(options or {}) for name, options in checks.items()}


def registered(kind: str) -> tuple[str, ...]:
    """The names registered for an extension point: "methods", "checks" or "formats".

    Imported when a config is read, not when this module is: the registries sit above the
    config in the import order (they use its settings), and a method, check or report format
    added with one registration line is then accepted by the config with no edit here.
    """
    if kind == "methods":
        from .methods import METHODS

        return tuple(METHODS)
    if kind == "checks":
        from .checks import CHECKS

        return tuple(check.name for check in CHECKS)
    from .reports import WRITERS

    return tuple(WRITERS)


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
    c = v.mapping(raw if raw is not None else {}, "compare")
    v.keys(c, "compare", optional=("max_proxy_share_increase", "bootstrap_samples", "confidence",
                                   "seed", "top_k", "min_change"))
    margin = c.get("max_proxy_share_increase")
    confidence = v.fraction(c.get("confidence", 0.95), "compare.confidence")
    if not 0 < confidence < 1:
        v.fail("compare.confidence", "a number strictly between 0 and 1", confidence)
    return CompareSettings(
        max_proxy_share_increase=(v.fraction(margin, "compare.max_proxy_share_increase")
                                  if margin is not None else None),
        bootstrap_samples=v.integer(c.get("bootstrap_samples", 1000), "compare.bootstrap_samples",
                                    minimum=0, maximum=MAX_BOOTSTRAP_SAMPLES),
        confidence=confidence,
        seed=v.integer(c.get("seed", 0), "compare.seed", minimum=0, maximum=MAX_SEED,
                       maximum_text="2**64 - 1"),
        top_k=v.integer(c.get("top_k", 3), "compare.top_k", minimum=1),
        min_change=v.number(c.get("min_change", 2.0), "compare.min_change", 0, 100),
    )


def _report(v: _Validator, raw: Any, default_dir: Path) -> ReportConfig:
    r = v.mapping(raw if raw is not None else {}, "report")
    v.keys(r, "report", optional=("dir", "formats", "examples"))
    formats = r.get("formats", list(REPORT_FORMATS))
    known = registered("formats")
    if not isinstance(formats, list) or not formats:
        v.fail("report.formats", f"a non-empty list drawn from {list(known)}", formats)
    chosen = tuple(v.choice(f, f"report.formats[{i}]", known)
                   for i, f in enumerate(formats))
    check_available(chosen, f"{v.source}: report.formats")
    examples = r.get("examples", "all")
    if not (examples in EXAMPLES or _is_int(examples) and examples >= 1):
        v.fail("report.examples", "all, top, none or a row limit (an integer >= 1)", examples)
    return ReportConfig(dir=v.path(r["dir"], "report.dir") if "dir" in r else default_dir,
                        formats=tuple(dict.fromkeys(chosen)), examples=examples)


def _default_report_dir(source: str | Path, base_dir: Path) -> Path:
    """Without report.dir: reports/<config name> beside the config, so two configs in one
    folder (scorer_v1.yaml, scorer_v2.yaml) keep their reports apart."""
    name = Path(str(source)).name
    stem = Path(name).stem if name.endswith((".yaml", ".yml")) else ""
    return Path(os.path.normpath(base_dir / "reports" / stem))


def check_available(formats: tuple[str, ...], where: str) -> None:
    """A format whose optional packages are missing (png, html without matplotlib) is
    refused before any data is read, with the command that installs them."""
    from .reports import unavailable

    for name in formats:
        reason = unavailable(name)
        if reason is not None:
            raise ConfigError(f"{where}: '{name}' {reason}")


class _Validator:
    """Type checks that raise one-line ConfigErrors naming the file and the dotted key."""

    def __init__(self, source: str, base_dir: Path):
        self.source = source
        self.base_dir = base_dir

    def fail(self, key: str, expected: str, found: Any) -> None:
        raise ConfigError(f"{self.source}: {key} must be {expected} (got {describe(found)})")

    def mapping(self, value: Any, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            if key == "":
                raise ConfigError(f"{self.source}: the config must be a mapping with sections "
                                  f"model, data, audit, compare, report (got {describe(value)})")
            self.fail(key, "a mapping", value)
        for k in value:
            if not isinstance(k, str):
                self.fail(f"{key}.{brief(k)}" if key else brief(k), "a text key", k)
        return value

    def keys(self, m: Mapping[str, Any], key: str, *, required: tuple[str, ...] = (),
             optional: tuple[str, ...] = ()) -> None:
        allowed = required + optional
        where = f" in {key}" if key else ""
        for k in m:
            if k not in allowed:
                raise ConfigError(f"{self.source}: unknown key '{k}'{where}"
                                  f"{did_you_mean(k, allowed)} "
                                  f"(allowed: {', '.join(allowed)})")
        for k in required:
            if k not in m:
                dotted = f"{key}.{k}" if key else k
                raise ConfigError(f"{self.source}: missing required key '{dotted}'")

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, "a non-empty string", value)
        return value

    def names(self, value: Any, key: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            self.fail(key, "a non-empty list of names", value)
        names = tuple(self.string(item, f"{key}[{i}]") for i, item in enumerate(value))
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"{self.source}: {key} lists '{dupes[0]}' more than once")
        return names

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, "true or false", value)
        return value

    def integer(self, value: Any, key: str, *, minimum: int, maximum: int | None = None,
                maximum_text: str | None = None) -> int:
        ok = (isinstance(value, int) and not isinstance(value, bool) and value >= minimum
              and (maximum is None or value <= maximum))
        if not ok:
            self.fail(key, f"an integer >= {minimum}" if maximum is None else
                      f"an integer from {minimum} to {maximum_text or maximum}", value)
        return value

    def fraction(self, value: Any, key: str) -> float:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value) and 0 <= value <= 1)
        if not ok:
            self.fail(key, "a number in [0, 1]", value)
        return float(value)

    def finite(self, value: Any, key: str) -> float:
        if not _is_number(value):
            self.fail(key, "a finite number", value)
        return float(value)

    def positive(self, value: Any, key: str) -> float:
        if not (_is_number(value) and value > 0):
            self.fail(key, "a finite number > 0", value)
        return float(value)

    def number(self, value: Any, key: str, low: float, high: float) -> float:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value) and low <= value <= high)
        if not ok:
            self.fail(key, f"a number from {low:g} to {high:g}", value)
        return float(value)

    def choice(self, value: Any, key: str, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            self.fail(key, "one of " + ", ".join(allowed), value)
        return value

    def path(self, value: Any, key: str) -> Path:
        text = self.string(value, key)
        path = Path(text).expanduser()
        # normpath: 'configs/../reports' reads better as 'reports' in every message and report.
        return Path(os.path.normpath(path if path.is_absolute() else self.base_dir / path))

    def class_path(self, value: Any, key: str, class_file: Path | None = None) -> str:
        text = self.string(value, key)
        if class_file is None:
            module, _, name = text.partition(":")
            if not module or not name:
                self.fail(key, "'package.module:ClassName'", value)
            return text
        module, colon, name = text.rpartition(":")
        if not name.isidentifier() or (colon and module != class_file.stem):
            self.fail(key, f"the name of a class in model.class_file ('ClassName' or "
                           f"'{class_file.stem}:ClassName')", value)
        return text
