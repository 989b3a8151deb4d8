"""The library entry points, thin: each loads what the config names and calls the pipeline.

``run_audit(load_config(path))`` is what ``sensaudit run`` does. Computing and writing are
separate: :func:`audit` returns an :class:`AuditResult` and :func:`compare_models` a
:class:`ComparisonResult`; :func:`run_audit` and :func:`run_compare` also write the reports,
atomically (``run_audit`` hands the per-row file's writers an
:class:`~sensaudit.pipeline.example_rows.ExampleRows`, so rows stream to disk as the engine
produces them). The engine (``engine: local | ray``) runs the audit's plan
(:mod:`sensaudit.pipeline.plan`). Library code never prints; pass ``progress`` to follow long
runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import torch

from sensaudit.checks import check_names, data_columns
from sensaudit.config.load import Config
from sensaudit.config.sections import check_report_formats
from sensaudit.core.errors import ConfigError, ModelLoadError, did_you_mean
from sensaudit.core.jacobian import Model
from sensaudit.core.torch_support import require_supported_torch
from sensaudit.engines.local import audit_local, compare_local
from sensaudit.inputs import tables
from sensaudit.inputs.dataset import protected_files
from sensaudit.inputs.model_inputs import (
    ModelInputs,
    PairedInputs,
    declared_inputs,
    match_data,
    order_note,
    paired_inputs,
)
from sensaudit.inputs.models import (
    LoadedModel,
    float_dtype,
    load_model,
    narrowest_dtype,
    resolve_device,
)
from sensaudit.inputs.regular import refuse_special
from sensaudit.inputs.table_layout import Table
from sensaudit.inputs.training_rows import training_ties
from sensaudit.methods import METHODS
from sensaudit.pipeline.baselines import baseline_vector, reference_of
from sensaudit.pipeline.compare import check_bootstrap_size
from sensaudit.pipeline.example_rows import ExampleRows
from sensaudit.pipeline.examples import records_table
from sensaudit.pipeline.pass_state import Progress
from sensaudit.pipeline.plan import audit_plan
from sensaudit.reports import WRITERS, open_writers, unavailable
from sensaudit.reports.base import ReportWriter
from sensaudit.reports.staging import StagedReport
from sensaudit.results.audit_result import AuditResult
from sensaudit.results.comparison import ComparisonResult
from sensaudit.settings.sections import (
    REPORT_FORMATS,
    AuditSettings,
    CompareSettings,
    DataConfig,
    ModelConfig,
    ProxyLimit,
)

# The loader's .pt2 safety checks need torch's current archive layout (torch_support).
require_supported_torch()


def run_audit(config: Config, *, progress: Progress | None = None,
              trust_model_code: bool | None = None) -> tuple[AuditResult, list[Path]]:
    """Audit as the config says and write its reports; return the result and files written."""
    check_report_formats(config.source, config.report.formats)
    with StagedReport(config.report.dir, config.report.formats, protect=(
            config.source, *protected_files(config.data.path), *protected_files(config.data.train),
            _model_path(config))) as staged:
        choice = config.report.examples
        writers = open_writers(staged, config.report.formats, examples=choice != "none",
                               options=config.report.options)
        # Only formats that write per-row files are given the rows (report.examples says
        # which: pipeline.example_rows).
        takers = [w for w in writers if type(w).examples is not ReportWriter.examples]

        def write(rows: pa.Table) -> None:
            for writer in takers:
                writer.examples(rows)

        examples = ExampleRows(write, choice) if takers else None
        result = _audit(config, progress=progress, trust_model_code=trust_model_code,
                        examples=examples)
        if examples is not None:
            result = examples.finish(result, with_label=config.data.label is not None)
        for writer in writers:
            writer.audit(result)
        written = staged.commit()
    return result, written


def audit(config: Config, *, progress: Progress | None = None,
          trust_model_code: bool | None = None) -> AuditResult:
    """Load the config's model and data, compute every row's attributions, rank, and check."""
    return _audit(config, progress=progress, trust_model_code=trust_model_code)


def _audit(config: Config, *, progress: Progress | None, trust_model_code: bool | None,
           examples: ExampleRows | None = None) -> AuditResult:
    """:func:`audit`; ``examples``: the per-row file's rows, as report.examples asks."""
    if config.model is None:
        raise ConfigError(f"{config.source}: missing required key 'model'")
    inputs = declared_inputs(config.model, config.data)
    data = replace(match_data(config.data, inputs, config.source),
                   extra=data_columns(config.audit))
    table = tables.open_table(data)
    check_proxies(config.audit, table.features, config.source)
    training = training_ties(data, table.features, config.source, progress=progress)
    if config.engine == "ray":  # the same audit over a pool of Ray actors
        from sensaudit.engines.ray.driver import audit_on_ray

        return audit_on_ray(config, data, table, progress=progress or _no_progress,
                            examples=examples, notes=_notes(inputs, table.features),
                            trust_model_code=trust_model_code, training=training)
    plan = audit_plan(config.audit, table, config.source, model_cfg=config.model,
                      notes=_notes(inputs, table.features), training=training)
    loaded = load_model(config.model, trust_model_code=trust_model_code)
    outcome = audit_local([loaded], lambda: tables.iter_chunks(table, data, loaded.dtype), plan,
                          progress=progress or _no_progress, examples=examples)
    return outcome.results[0]


def audit_frame(model: torch.nn.Module | Model | LoadedModel, frame: pd.DataFrame, *,
                features: list[str] | None = None, label: str | None = None,
                id: str | None = None,
                proxies: list[ProxyLimit] | tuple[ProxyLimit, ...] | None = None,
                settings: AuditSettings | None = None, device: str | None = None,
                chunk_rows: int = 100_000, train: pd.DataFrame | None = None) -> AuditResult:
    """Audit an in-memory model on an in-memory DataFrame (notebooks, other tools).

    ``model``: a module or function of x [rows, features], a ``torch.export`` program's
    ``.module()``, or what :func:`~sensaudit.load_model` returns. ``proxies``, when given,
    replaces ``settings.proxies``. ``device`` defaults to where the module's parameters are
    (CPU for a plain function; a loaded model's own device). A module in training mode is
    audited in eval mode and handed back in training mode (an exported graph keeps the mode
    it was exported in). ``train``: the rows the model was trained on, with the same
    columns (``data.train``), for the suspects check's test of whether each feature's tie to
    the label holds on ``frame``.
    """
    name, data_cfg, settings, table = _frame_audit(frame, features, label, id, chunk_rows,
                                                   settings, proxies)
    loaded = _in_memory(model, device)
    training = training_ties(data_cfg, table.features, name, frame=train)
    plan = audit_plan(settings, table, name, model_cfg=None,
                      notes=_notes(declared_inputs(None, data_cfg), table.features),
                      training=training)
    with _eval_mode(loaded):
        outcome = audit_local(
            [loaded], lambda: tables.iter_frame_chunks(frame, table, data_cfg, loaded.dtype),
            plan, progress=_no_progress)
    return outcome.results[0]


def _frame_audit(frame: pd.DataFrame, features: list[str] | None, label: str | None,
                 id: str | None, chunk_rows: int, settings: AuditSettings | None,
                 proxies: list[ProxyLimit] | tuple[ProxyLimit, ...] | None
                 ) -> tuple[Path, DataConfig, AuditSettings, Table]:
    """What audit_frame and compare_frames both start from: the frame's name, its data
    config (with the columns the checks read beside the features), the settings with
    ``proxies`` in place, and the table, its declared proxies checked."""
    name = Path("<DataFrame>")
    settings = settings or AuditSettings()
    if proxies is not None:
        settings = replace(settings, proxies=tuple(proxies))
    data_cfg = DataConfig(path=name, features=tuple(features) if features else None,
                          label=label, id=id, chunk_rows=chunk_rows,
                          extra=data_columns(settings))
    table = tables.frame_table(frame, data_cfg)
    check_proxies(settings, table.features, name)
    return name, data_cfg, settings, table


def compare_frames(old_model: torch.nn.Module | Model | LoadedModel,
                   new_model: torch.nn.Module | Model | LoadedModel, frame: pd.DataFrame, *,
                   old_replicas: Sequence[torch.nn.Module | Model | LoadedModel] = (),
                   new_replicas: Sequence[torch.nn.Module | Model | LoadedModel] = (),
                   features: list[str] | None = None, label: str | None = None,
                   id: str | None = None,
                   proxies: list[ProxyLimit] | tuple[ProxyLimit, ...] | None = None,
                   settings: AuditSettings | None = None,
                   compare: CompareSettings | None = None, device: str | None = None,
                   chunk_rows: int = 100_000) -> ComparisonResult:
    """:func:`compare_models` for in-memory models on an in-memory DataFrame: both models
    audited on the same rows, and how their sensitivities moved.

    The models are taken as :func:`audit_frame` takes one; ``old_replicas`` /
    ``new_replicas`` are the same models retrained with other seeds, whose spread widens the
    change's interval. ``compare`` holds compare's settings (bootstrap, margins).
    """
    name, data_cfg, settings, table = _frame_audit(frame, features, label, id, chunk_rows,
                                                   settings, proxies)
    cmp = compare or CompareSettings()
    check_bootstrap_size(cmp, len(table.features), name)
    models = [_in_memory(m, device)
              for m in (old_model, new_model, *old_replicas, *new_replicas)]
    with ExitStack() as modes:
        for loaded in models:
            modes.enter_context(_eval_mode(loaded))
        dtype = narrowest_dtype(models)
        return compare_local(
            models, lambda: tables.iter_frame_chunks(frame, table, data_cfg, dtype),
            table, settings, cmp, model_cfg=None, source=name, progress=_no_progress,
            notes=_notes(declared_inputs(None, data_cfg), table.features),
            replicas=(len(old_replicas), len(new_replicas)))


def write_reports(result: AuditResult | ComparisonResult, directory: str | Path,
                  formats: Sequence[str] = REPORT_FORMATS) -> list[Path]:
    """Write ``result``'s report files into ``directory`` with the writers ``sensaudit run``
    and ``compare`` use, and return the files written.

    ``formats``: any of :data:`sensaudit.reports.WRITERS`' names (default: csv, markdown,
    json). Atomic, as the CLI's reports are: the files appear together or not at all, and
    the reports an earlier call wrote there that these formats no longer write are removed;
    any other file in ``directory`` is left alone, and a directory that would replace the
    result's model or data file is refused. The per-row examples file (csv, parquet) holds the
    rows the report lists (``report.examples: top``).
    """
    formats = tuple(formats)
    for name in formats:
        if name not in WRITERS:
            raise ConfigError(f"write_reports: unknown report format '{name}'"
                              f"{did_you_mean(name, list(WRITERS))} (formats: "
                              f"{', '.join(WRITERS)})")
        missing = unavailable(name)
        if missing is not None:
            raise ConfigError(f"write_reports: report format '{name}' {missing}")
    audits = [result.old, result.new] if isinstance(result, ComparisonResult) else [result]
    # The files the result was computed from (not an in-memory model's or frame's <name>).
    inputs = [Path(p) for a in audits for p in (a.model_path, a.data_path)
              if not p.startswith("<")]
    kind = "compare" if isinstance(result, ComparisonResult) else "audit"
    with StagedReport(directory, formats, kind=kind, protect=inputs) as staged:
        writers = open_writers(staged, formats)
        for writer in writers:
            if isinstance(result, ComparisonResult):
                writer.comparison(result)
            else:
                if type(writer).examples is not ReportWriter.examples:
                    writer.examples(records_table(
                        result.examples, per_unit=result.per_unit,
                        with_label=any(e.label is not None or e.reason == "misscored"
                                       for e in result.examples)))
                writer.audit(result)
        return staged.commit()


def attribute(model: torch.nn.Module | Model, x: torch.Tensor, *, method: str = "gradient",
              baseline: str | torch.Tensor | list[float] = "mean", samples: int = 50,
              noise: float = 0.2, seed: int = 0, steps: int = 50,
              batch_size: int | None = None) -> torch.Tensor:
    """Per-row attributions of ``model`` at the rows x: float [rows, features] -> [rows,
    outputs, features], on x's device and dtype, batched and chunked as in an audit.

    method: gradient (d output / d feature), gradient_x_input, smoothgrad (``samples`` noisy
    copies, noise ``noise`` x each feature's std over x, seeded by ``seed``; row r of x is row
    number r + 1) or integrated_gradients (``steps`` Gauss-Legendre points). baseline: mean,
    zero or median (of x's rows), or a tensor / list of one value per feature. The model is
    used as it is (put it in eval mode first).
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)} (got {method!r})")
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise ConfigError("x must be a float tensor shaped [rows, features]")
    named = baseline if isinstance(baseline, str) else "zero"
    cls = METHODS[method]
    given = {"samples": samples, "noise": noise, "seed": seed, "steps": steps}
    # The method's own options, checked as its declaration says (the others are not its own).
    options = ({} if cls.Options is None else vars(cls.Options(**{
        f.name: given[f.name] for f in dataclasses.fields(cls.Options) if f.name in given})))
    settings = AuditSettings(method=method, baseline=named, batch_size=batch_size,
                             method_options=options)
    chosen = cls.from_settings(settings)
    reference = reference_of(x, median=baseline == "median")
    if isinstance(baseline, str):
        vector = baseline_vector(baseline, reference, [str(j) for j in range(x.shape[1])])
    else:
        vector = torch.as_tensor(baseline, dtype=torch.float64).detach().cpu().reshape(-1)
        if vector.shape[0] != x.shape[1]:
            raise ConfigError(f"baseline has {vector.shape[0]} values; x has {x.shape[1]} "
                              "features")
    if "std" in chosen.needs and x.shape[0] < 2:
        raise ConfigError(f"method {method} scales its noise by the features' std over x, "
                          "which needs at least 2 rows")
    chosen.prepare(vector, reference.std)
    return chosen.attribute(model, x.detach()).values


def compare_models(config: Config, old_path: str | Path, new_path: str | Path, *,
                   old_replicas: Sequence[str | Path] = (),
                   new_replicas: Sequence[str | Path] = (),
                   data_path: str | Path | None = None, progress: Progress | None = None,
                   trust_model_code: bool | None = None) -> ComparisonResult:
    """Audit two models on the same rows and measure how their sensitivities moved.

    ``old_replicas`` / ``new_replicas``: the same models retrained with other seeds; their
    spread on these rows (retraining noise) widens the change's interval.
    Models whose saved input names differ (a column dropped, added or reordered) both read
    the union of their columns, each fed its own (see :mod:`sensaudit.pipeline.compare`).
    The config's data, proxies and compare settings apply; its ``model`` section, if any,
    only lends both models its class/kwargs/output/device settings: its ``trust_model_code``
    does not carry over to the files named here (pass ``trust_model_code=True`` for that).
    """
    if data_path is not None:
        config = replace(config, data=replace(config.data, path=Path(data_path)))
    named = [("OLD", old_path), ("NEW", new_path), *(("--old-replica", p) for p in old_replicas),
             *(("--new-replica", p) for p in new_replicas)]
    for key, model_path in named:  # before anything opens them: a FIFO would block
        refuse_special(Path(model_path), key, ModelLoadError)
    base = config.model or ModelConfig(path=Path(old_path))
    configs = [replace(base, path=Path(p), trust_model_code=False)
               for p in (old_path, new_path, *old_replicas, *new_replicas)]
    paired = paired_inputs(declared_inputs(configs[0], config.data),
                           declared_inputs(configs[1], config.data), configs[0].path,
                           configs[1].path)
    inputs = paired.table
    if paired.differ:  # each model takes its own columns of the union both read
        configs = _own_columns(configs, paired, config.data, replicas=len(old_replicas))
    data = replace(match_data(config.data, inputs, config.source),
                   extra=data_columns(config.audit))
    table = tables.open_table(data)
    check_proxies(config.audit, table.features, config.source)
    check_bootstrap_size(config.compare, len(table.features), config.source)
    training = training_ties(data, table.features, config.source, progress=progress)
    if config.engine == "ray":  # both models in the same Ray actors, on the same units
        from sensaudit.engines.ray.driver import compare_on_ray

        return compare_on_ray(config, configs, data, table, progress=progress or _no_progress,
                              notes=_notes(inputs, table.features),
                              replicas=(len(old_replicas), len(new_replicas)),
                              trust_model_code=trust_model_code,
                              inputs=(paired.old, paired.new), training=training)
    models = [load_model(c, trust_model_code=trust_model_code) for c in configs]
    # Every model sees the same rows, each converted to its own dtype.
    return compare_local(models, lambda: tables.iter_chunks(table, data, narrowest_dtype(models)),
                         table, config.audit, config.compare, model_cfg=config.model,
                         source=config.source, progress=progress or _no_progress,
                         notes=_notes(inputs, table.features),
                         replicas=(len(old_replicas), len(new_replicas)),
                         inputs=(paired.old, paired.new), training=training)


def run_compare(config: Config, old_path: str | Path, new_path: str | Path, *,
                old_replicas: Sequence[str | Path] = (), new_replicas: Sequence[str | Path] = (),
                out_dir: str | Path | None = None, data_path: str | Path | None = None,
                progress: Progress | None = None,
                trust_model_code: bool | None = None) -> tuple[ComparisonResult, list[Path]]:
    """``compare_models`` and write comparison.csv/json/md atomically into ``out_dir``
    (default: the config's report.dir)."""
    check_report_formats(config.source, config.report.formats)
    target = Path(out_dir) if out_dir is not None else config.report.dir
    with StagedReport(target, config.report.formats, kind="compare", protect=(
            config.source, *protected_files(config.data.path),
            *protected_files(config.data.train),
            *protected_files(None if data_path is None else Path(data_path)), old_path,
            new_path, *old_replicas, *new_replicas, _model_path(config))) as staged:
        writers = open_writers(staged, config.report.formats,  # format errors before the work
                               options=config.report.options)
        result = compare_models(config, old_path, new_path, old_replicas=old_replicas,
                                new_replicas=new_replicas, data_path=data_path,
                                progress=progress, trust_model_code=trust_model_code)
        for writer in writers:
            writer.comparison(result)
        written = staged.commit()
    return result, written


def check_proxies(settings: AuditSettings, features: tuple[str, ...], source: object) -> None:
    """Every feature name the settings give (proxies, groups, expectations, ...) is audited:
    a typo must not disable a gate. Each check checks the names it reads."""
    check_names(settings, features, source)


def _notes(inputs: ModelInputs, features: tuple[str, ...]) -> list[str]:
    note = order_note(inputs, features)
    return [note] if note else []


def _own_columns(configs: list[ModelConfig], paired: PairedInputs, data: DataConfig,
                 replicas: int) -> list[ModelConfig]:
    """Each model's config with where its inputs are among the union's columns: old, new, and
    each replica by its own saved names, else as the model it retrains."""
    union = paired.table.features or ()
    sides = [paired.old, paired.new, *[paired.old] * replicas,
             *[paired.new] * (len(configs) - 2 - replicas)]
    placed = []
    for i, (cfg, side) in enumerate(zip(configs, sides, strict=True)):
        own = side if i < 2 else (declared_inputs(cfg, data).features or side)
        if own is not None:
            outside = [f for f in own if f not in union]
            if outside:
                raise ModelLoadError(f"{cfg.path}: takes '{outside[0]}', which neither "
                                     "compared model takes (a replica retrains OLD or NEW, "
                                     "on the same columns)")
        placed.append(replace(cfg, columns=paired.columns(own)))
    return placed


def _model_path(config: Config) -> Path | None:
    return config.model.path if config.model is not None else None


def _in_memory(model: torch.nn.Module | Model | LoadedModel, device: str | None
               ) -> LoadedModel:
    """An in-memory model as the pipeline takes it: a loaded model as it was loaded, anything
    else on ``device`` (default: where its parameters are)."""
    if isinstance(model, LoadedModel):
        if device is not None and resolve_device(device) != model.device:
            raise ConfigError(f"{model.path} was loaded on {model.device}, not {device}; load "
                              f"it with ModelConfig(device='{device}') instead")
        return model
    if not callable(model):
        raise ConfigError(f"model must be a torch module or a function of x [rows, features] "
                          f"(got a {type(model).__name__})")
    target = _parameter_device(model) if device is None else resolve_device(device)
    return LoadedModel(module=model, path=Path("<in-memory model>"), format="in-memory",
                       device=target, dtype=float_dtype(model))


@contextmanager
def _eval_mode(loaded: LoadedModel) -> Iterator[None]:
    """The model in eval mode while audited, handed back in the mode it came in. An exported
    graph (``torch.export``'s ``.module()``) fixed its mode when it was exported and refuses
    both train() and eval(): it is audited as it is."""
    module = loaded.module
    if (not isinstance(module, torch.nn.Module) or not module.training
            or _mode_fixed_at_export(module)):
        yield
        return
    module.eval()
    try:
        yield
    finally:
        module.train()


def _mode_fixed_at_export(module: torch.nn.Module) -> bool:
    # ExportedProgram.module() replaces the graph module's eval() with one that raises.
    return (isinstance(module, torch.fx.GraphModule)
            and getattr(module.eval, "__func__", None) is not torch.nn.Module.eval)


def _parameter_device(model: object) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for tensor in [*model.parameters(), *model.buffers()]:
            return tensor.device
    return torch.device("cpu")


def _no_progress(stage: str, done: int, total: int | None) -> None:
    pass
