"""The library entry points, thin: each loads what the config names and calls the pipeline.

``run_audit(load_config(path))`` is what ``sensaudit run`` does. Computing and writing are
separate: :func:`audit` returns an :class:`AuditResult` and :func:`compare_models` a
:class:`ComparisonResult`; :func:`run_audit` and :func:`run_compare` also write the reports,
atomically (``run_audit`` streams per-example rows to disk as they are produced). Library code
never prints; pass ``progress`` to follow long runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import torch

from sensaudit.checks import check_names
from sensaudit.config.load import Config
from sensaudit.core.errors import ConfigError, ModelLoadError
from sensaudit.core.jacobian import Model
from sensaudit.core.torch_support import require_supported_torch
from sensaudit.inputs import tables
from sensaudit.inputs.dataset import protected_files
from sensaudit.inputs.model_inputs import ModelInputs, declared_inputs, match_data, order_note
from sensaudit.inputs.models import LoadedModel, float_dtype, load_model, resolve_device
from sensaudit.inputs.regular import refuse_special
from sensaudit.methods import METHODS
from sensaudit.pipeline.baselines import baseline_vector, reference_of
from sensaudit.pipeline.compare import check_bootstrap_size, compare_on_rows
from sensaudit.pipeline.examples import records_table
from sensaudit.pipeline.pass_state import ExampleSink, Progress
from sensaudit.pipeline.passes import audit_models
from sensaudit.reports import open_writers
from sensaudit.reports.base import ReportWriter
from sensaudit.reports.staging import StagedReport
from sensaudit.results.audit_result import AuditResult
from sensaudit.results.comparison import ComparisonResult
from sensaudit.settings.sections import (
    AUTO_EXAMPLE_ROWS,
    AuditSettings,
    DataConfig,
    ModelConfig,
    ProxyLimit,
)

# The loader's .pt2 safety checks need torch's current archive layout (torch_support).
require_supported_torch()


def run_audit(config: Config, *, progress: Progress | None = None,
              trust_model_code: bool | None = None) -> tuple[AuditResult, list[Path]]:
    """Audit as the config says and write its reports; return the result and files written."""
    with StagedReport(config.report.dir, config.report.formats, protect=(
            config.source, *protected_files(config.data.path), _model_path(config))) as staged:
        choice = config.report.examples
        writers = open_writers(staged, config.report.formats, examples=choice != "none",
                               options=config.report.options)
        # Only formats that write per-row files are fed the rows as they stream.
        sinks = [w for w in writers if type(w).examples is not ReportWriter.examples]

        def to_sinks(rows: pa.Table) -> None:
            for writer in sinks:
                writer.examples(rows)

        # report.examples: every row streams, or the first N, or (auto) every row of an audit
        # of at most AUTO_EXAMPLE_ROWS rows; top and none stream nothing.
        sink: ExampleSink | None = None
        limit: int | None = None
        if sinks and choice in ("all", "auto"):
            sink = to_sinks
            limit = AUTO_EXAMPLE_ROWS if choice == "auto" else None
        elif sinks and isinstance(choice, int):
            sink, limit = _first_rows(to_sinks, choice), choice
        result = audit(config, progress=progress, trust_model_code=trust_model_code,
                       example_sink=sink, sink_limit=limit, sink_all_or_none=choice == "auto")
        if sinks and not result.examples_streamed:
            result.notes = [*result.notes, (
                f"The per-row file holds the rows this report lists: the audit has "
                f"{result.rows + result.nonfinite_rows:,} rows, more than report.examples: auto "
                f"writes one by one ({AUTO_EXAMPLE_ROWS:,}); report.examples: all writes every "
                "row.")]
        if sinks and (choice == "top" or not result.examples_streamed):
            # The rows report.md lists, with all their drivers.
            to_sinks(records_table(result.examples, with_label=config.data.label is not None,
                                   per_unit=result.per_unit))
        for writer in writers:
            writer.audit(result)
        written = staged.commit()
    return result, written


def audit(config: Config, *, progress: Progress | None = None,
          trust_model_code: bool | None = None, example_sink: ExampleSink | None = None,
          sink_limit: int | None = None,
          sink_all_or_none: bool = False) -> AuditResult:
    """Load the config's model and data, compute every row's attributions, rank, and check.
    ``example_sink`` receives the per-row examples rows (see pipeline.audit_models for
    ``sink_limit`` and ``sink_all_or_none``)."""
    if config.model is None:
        raise ConfigError(f"{config.source}: missing required key 'model'")
    inputs = declared_inputs(config.model, config.data)
    data = match_data(config.data, inputs, config.source)
    table = tables.open_table(data)
    check_proxies(config.audit, table.features, config.source)
    if config.engine == "ray":  # the same audit over a pool of Ray actors
        from sensaudit.engines.ray.driver import audit_on_ray

        # The workers stream every row's examples; an all-or-none limit holds them back until
        # the rows are known to be at most that many (Parquet footers tell before any is read).
        held, wanted = None, example_sink is not None
        if example_sink is not None and sink_all_or_none and sink_limit is not None:
            if table.row_count is not None and table.row_count > sink_limit:
                example_sink = None
            elif table.row_count is None:  # a CSV: count as the rows come
                held = _HeldRows(example_sink, sink_limit)
                example_sink = held.take
        result = audit_on_ray(config, data, table, progress=progress or _no_progress,
                              example_sink=example_sink, notes=_notes(inputs, table.features),
                              trust_model_code=trust_model_code)
        streamed = not wanted or (example_sink is not None
                                  and (held is None or held.release()))
        return result if streamed else replace(result, examples_streamed=False)
    loaded = load_model(config.model, trust_model_code=trust_model_code)
    (result,), _, _ = audit_models(
        [loaded], lambda: tables.iter_chunks(table, data, loaded.dtype), table,
        config.audit, model_cfg=config.model, source=config.source,
        progress=progress or _no_progress, example_sink=example_sink,
        notes=_notes(inputs, table.features), sink_limit=sink_limit,
        sink_all_or_none=sink_all_or_none)
    return result


def audit_frame(model: torch.nn.Module | Model, frame: pd.DataFrame, *,
                features: list[str] | None = None, label: str | None = None,
                id: str | None = None, proxies: list[ProxyLimit] | tuple | None = None,
                settings: AuditSettings | None = None, device: str | None = None,
                chunk_rows: int = 100_000) -> AuditResult:
    """Audit an in-memory model on an in-memory DataFrame (notebooks, other tools).

    ``proxies``, when given, replaces ``settings.proxies``. ``device`` defaults to where the
    module's parameters are (CPU for a plain function). A module in training mode is audited
    in eval mode and handed back in training mode.
    """
    name = Path("<DataFrame>")
    data_cfg = DataConfig(path=name, features=tuple(features) if features else None,
                          label=label, id=id, chunk_rows=chunk_rows)
    settings = settings or AuditSettings()
    if proxies is not None:
        settings = replace(settings, proxies=tuple(proxies))
    table = tables.frame_table(frame, data_cfg)
    check_proxies(settings, table.features, name)
    target = _parameter_device(model) if device is None else resolve_device(device)
    module = model if isinstance(model, torch.nn.Module) else None
    was_training = module is not None and module.training
    if module is not None and was_training:
        module.eval()
    try:
        loaded = LoadedModel(module=model, path=Path("<in-memory model>"), format="in-memory",
                             device=target, dtype=float_dtype(model))
        (result,), _, _ = audit_models(
            [loaded], lambda: tables.iter_frame_chunks(frame, table, data_cfg, loaded.dtype),
            table, settings, model_cfg=None, source=name, progress=_no_progress,
            notes=_notes(declared_inputs(None, data_cfg), table.features))
        return result
    finally:
        if module is not None and was_training:
            module.train()


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
    inputs = _same_inputs([declared_inputs(c, config.data) for c in configs[:2]], configs[:2])
    data = match_data(config.data, inputs, config.source)
    table = tables.open_table(data)
    check_proxies(config.audit, table.features, config.source)
    check_bootstrap_size(config.compare, len(table.features), config.source)
    if config.engine == "ray":  # both models in the same Ray actors, on the same units
        from sensaudit.engines.ray.driver import compare_on_ray

        return compare_on_ray(config, configs, data, table, progress=progress or _no_progress,
                              notes=_notes(inputs, table.features),
                              replicas=(len(old_replicas), len(new_replicas)),
                              trust_model_code=trust_model_code)
    models = [load_model(c, trust_model_code=trust_model_code) for c in configs]
    # Every model sees the same rows, each converted to its own dtype.
    return compare_on_rows(models, lambda: tables.iter_chunks(table, data, _narrowest(models)),
                           table, config.audit, config.compare, model_cfg=config.model,
                           source=config.source, progress=progress or _no_progress,
                           notes=_notes(inputs, table.features),
                           replicas=(len(old_replicas), len(new_replicas)))


def run_compare(config: Config, old_path: str | Path, new_path: str | Path, *,
                old_replicas: Sequence[str | Path] = (), new_replicas: Sequence[str | Path] = (),
                out_dir: str | Path | None = None, data_path: str | Path | None = None,
                progress: Progress | None = None,
                trust_model_code: bool | None = None) -> tuple[ComparisonResult, list[Path]]:
    """``compare_models`` and write comparison.csv/json/md atomically into ``out_dir``
    (default: the config's report.dir)."""
    target = Path(out_dir) if out_dir is not None else config.report.dir
    with StagedReport(target, config.report.formats, kind="compare", protect=(
            config.source, *protected_files(config.data.path),
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


class _HeldRows:
    """An all-or-none row limit on a sink: rows are held until :meth:`release`, which passes
    them on when there were at most ``limit`` (and drops them otherwise)."""

    def __init__(self, sink: ExampleSink, limit: int):
        self.sink, self.limit = sink, limit
        self.rows: list[pa.Table] | None = []
        self.count = 0

    def take(self, rows: pa.Table) -> None:
        # One examples row per data row and output: the limit counts data rows.
        outputs = len(rows.column("output").unique()) if rows.num_rows else 1
        self.count += rows.num_rows // outputs
        if self.count > self.limit:
            self.rows = None  # past the limit: none of them will be written
        elif self.rows is not None:
            self.rows.append(rows)

    def release(self) -> bool:
        if self.rows is None:
            return False
        for rows in self.rows:
            self.sink(rows)
        return True


def _first_rows(sink: ExampleSink, limit: int) -> ExampleSink:
    """``report.examples: N``: the first N examples rows, in the order they are audited."""
    left = limit

    def take(rows: pa.Table) -> None:
        nonlocal left
        if left > 0:
            part = rows.slice(0, left)
            left -= part.num_rows
            sink(part)

    return take


def check_proxies(settings: AuditSettings, features: tuple[str, ...], source: object) -> None:
    """Every feature name the settings give (proxies, groups, expectations, ...) is audited:
    a typo must not disable a gate. Each check checks the names it reads."""
    check_names(settings, features, source)


def _notes(inputs: ModelInputs, features: tuple[str, ...]) -> list[str]:
    note = order_note(inputs, features)
    return [note] if note else []


def _same_inputs(inputs: list[ModelInputs], configs: list[ModelConfig]) -> ModelInputs:
    """compare feeds both models the same columns: their declared orders must agree."""
    old, new = inputs
    if old.features and new.features and old.features != new.features:
        raise ModelLoadError(f"{configs[1].path} takes its inputs as {', '.join(new.features)}"
                             f" but {configs[0].path} as {', '.join(old.features)}; compare "
                             "needs models that take the same columns")
    return old if old.features else new


def _model_path(config: Config) -> Path | None:
    return config.model.path if config.model is not None else None


def _narrowest(models: list[LoadedModel]) -> torch.dtype:
    """The dtype whose range every model's inputs must fit (values too large are named)."""
    dtypes = [m.dtype for m in models]
    return min(dtypes, key=lambda d: torch.finfo(d).max if d.is_floating_point else 0.0)


def _parameter_device(model: object) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for tensor in [*model.parameters(), *model.buffers()]:
            return tensor.device
    return torch.device("cpu")


def _no_progress(stage: str, done: int, total: int | None) -> None:
    pass
