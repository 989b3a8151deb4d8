"""The audit's passes over the data, feeding the method, the statistics and the checks.

0. **Statistics**, only for a method that needs them before its first row (a data-derived
   baseline, SmoothGrad's noise scale; :mod:`sensaudit.baselines`): a pre-pass measuring the
   feature means, standard deviations and (for a median baseline) medians.
1. **Read** (the data's one read otherwise): every chunk's feature moments, each model's
   attributions (the configured method), their sums and each check's per-chunk state; the
   chunk's compact per-row results and feature values go to a :class:`~sensaudit.spill.Spill`.
2. **Finish**: feature stds are now exact, so each model's sensitivity table is ranked and the
   checks judge it.
3. **Replay** the spill: per-row contributions (measured from the baseline), examples.csv
   rows, the examples worth reading, and whatever else a caller (``compare``) needs per row.

Everything here is a sum that merges (:mod:`sensaudit.stats`), so another engine can run the
read pass over partitions and merge the partial :class:`ReadPass` results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from .baselines import (
    FeatureSummary,
    Reference,
    baseline_labels,
    baseline_vector,
    check_baseline,
    describe_baseline,
    needs_data,
)
from .checks import Check, CheckResult, Ranking, build_checks
from .config import AuditSettings, ModelConfig
from .engine import Model, as_output_matrix, check_row_independence
from .errors import ConfigError, DataError, ModelError, first_line
from .examples import ExampleDrivers
from .inputs.models import LoadedModel
from .inputs.tables import Chunk, Table
from .methods import METHODS, AttributionMethod, Attributions
from .results import AuditResult, sensitivity_table
from .spill import Spill, SpilledChunk
from .stats import AttributionSums, FeatureMoments, finite_rows

# progress(stage, rows_done, rows_total): stage "statistics" (the pre-pass some methods need),
# "audit" (the read pass: attributions) or "examples" (the replay: per-row contributions);
# rows_total is None while unknown.
Progress = Callable[[str, int, "int | None"], None]
ExampleSink = Callable[[pa.Table], None]
Chunks = Callable[[], Iterator[Chunk]]
# on_chunk(chunk, [attributions per model]) sees every chunk of the read pass.
ChunkHook = Callable[[Chunk, list[Attributions]], None]


@dataclass
class PreparedModel:
    """A scorer wrapped to return only the audited outputs, with their names."""

    loaded: LoadedModel
    module: Model
    outputs: list[str]


@dataclass
class ModelPass:
    """One model's partial results from the read pass."""

    prepared: PreparedModel
    sums: AttributionSums
    checks: list[Check]


@dataclass
class ReadPass:
    moments: FeatureMoments
    dropped: int
    models: list[ModelPass]
    spill: Spill
    summary: FeatureSummary | None = None  # the read's feature statistics (moments, medians)


def make_method(settings: AuditSettings, source: object) -> AttributionMethod:
    cls = METHODS.get(settings.method)
    if cls is None:
        raise ConfigError(f"{source}: audit.method must be one of {', '.join(METHODS)} "
                          f"(got '{settings.method}')")
    return cls.from_settings(settings)


def needs_prepass(method: AttributionMethod, settings: AuditSettings,
                  features: tuple[str, ...]) -> bool:
    """Whether the method needs feature statistics before its first row: its noise scale,
    or a baseline measured from the data."""
    return "std" in method.needs or ("baseline" in method.needs
                                     and needs_data(settings.baseline, features))


def statistics_pass(chunks: Chunks, table: Table, settings: AuditSettings, *,
                    progress: Progress) -> Reference:
    """The pre-pass: exact means and stds, and medians when the baseline is the median."""
    summary = FeatureSummary(len(table.features), median=settings.baseline == "median")
    dropped = 0
    for chunk in chunks():
        dropped += chunk.dropped
        summary.update(chunk.rows, chunk.x)
        progress("statistics", summary.moments.count + dropped, table.row_count)
    _check_rows(summary.moments, table)
    return summary.reference(_checked_std(summary.moments.std, table))


def read_pass(models: list[LoadedModel], chunks: Chunks, table: Table, settings: AuditSettings,
              method: AttributionMethod, *, model_cfg: ModelConfig | None, source: object,
              progress: Progress, on_chunk: ChunkHook | None = None,
              medians: bool = False) -> ReadPass:
    """The one read of the data: moments, every model's attributions, sums and checks;
    ``medians``: also the median sample (a median baseline without a pre-pass).

    Models are probed on the first chunk (input width, output shape, row independence).
    """
    summary = FeatureSummary(len(table.features), median=medians)
    moments = summary.moments
    spill = Spill()
    passes: list[ModelPass] = []
    dropped = 0
    try:
        for chunk in chunks():
            dropped += chunk.dropped
            if not len(chunk.x):
                continue
            summary.update(chunk.rows, chunk.x)
            if not passes:
                passes = [_start(m, chunk.x, table, settings, model_cfg, source) for m in models]
                _check_same_outputs(passes)
            results = []
            for model_pass in passes:
                loaded = model_pass.prepared.loaded
                x = chunk.x.to(loaded.device, loaded.dtype)
                attributions = _attribute(method, model_pass.prepared, x, chunk.rows)
                finite = finite_rows(attributions.scores, attributions.values)
                model_pass.sums.update(chunk.rows, chunk.ids, attributions.scores,
                                       attributions.values, finite)
                for check in model_pass.checks:
                    check.update(chunk.rows, x, attributions)
                results.append(attributions)
            if on_chunk is not None:
                on_chunk(chunk, results)
            spill.append(chunk.rows, chunk.ids, chunk.labels,
                         [(a.scores, a.values) for a in results], x=chunk.x)
            progress("audit", moments.count + dropped, table.row_count)
    except BaseException:
        spill.close()
        raise
    try:
        _check_rows(moments, table)
    except DataError:
        spill.close()
        raise
    return ReadPass(moments=moments, dropped=dropped, models=passes, spill=spill,
                    summary=summary)


def _check_rows(moments: FeatureMoments, table: Table) -> None:
    if moments.count < 2:
        raise DataError(f"{table.path}: {moments.count} usable row(s); an audit needs at least 2 "
                        "to measure how much each feature varies")


def feature_std(read: ReadPass, table: Table) -> torch.Tensor:
    """The features' standard deviations over every row read, checked usable."""
    return _checked_std(read.moments.std, table)


def _checked_std(std: torch.Tensor, table: Table) -> torch.Tensor:
    # Values near float64's limit (1e154 and up) overflow the variance, and an infinite std
    # would make every share NaN.
    overflow = (~torch.isfinite(std)).nonzero().flatten().tolist()
    if overflow:
        raise DataError(f"{table.path}: column '{table.features[overflow[0]]}' has values too "
                        "large to measure how much it varies (its variance overflows); rescale "
                        "it")
    return std


def finish_model(model_pass: ModelPass, table: Table, std: torch.Tensor,
                 method: AttributionMethod) -> tuple[pd.DataFrame, list[CheckResult]]:
    """Rank one model's merged sums and let its checks judge them."""
    sums, loaded = model_pass.sums, model_pass.prepared.loaded
    if sums.rows == 0 and sums.nonfinite_rows:
        # Even under audit.allow_nonfinite, 0 rows audited leaves nothing to rank.
        ids = ", ".join(map(str, sums.nonfinite_ids[:5]))
        raise ModelError(f"{loaded.path}: the model gave non-finite scores or gradients on all "
                         f"{sums.nonfinite_rows:,} rows (first ids: {ids}), so there is nothing "
                         "to rank")
    if sums.rows and not bool((sums.sum_abs > 0).any()):
        raise ModelError(f"{loaded.path}: every gradient is exactly zero on all {sums.rows:,} rows:"
                         " the score does not respond to any feature (a step function, rounding,"
                         " or a constant output?), so there is nothing to rank")
    features, outputs = list(table.features), model_pass.prepared.outputs
    ranked = sensitivity_table(sums, features, outputs, std, per_unit=method.per_unit)
    ranking = Ranking(table=ranked, features=features, outputs=outputs)
    results = [check.finish(ranking) for check in model_pass.checks]
    failed = {(g.output, g.subject) for r in results for g in r.failed}
    ranked["flagged"] = [(o, f) in failed for o, f in zip(ranked["output"], ranked["feature"])]
    return ranked, results


def example_drivers(model_pass: ModelPass, table: Table, baseline: torch.Tensor,
                    settings: AuditSettings, method: AttributionMethod) -> ExampleDrivers:
    return ExampleDrivers(table.features, model_pass.prepared.outputs, top_k=settings.top_k,
                          proxies=[p.feature for p in settings.proxies],
                          keep=settings.examples_in_report, baseline=baseline,
                          per_unit=method.per_unit)


def replay(read: ReadPass, drivers: list[ExampleDrivers], *, progress: Progress,
           example_sink: ExampleSink | None = None,
           on_chunk: Callable[[SpilledChunk], None] | None = None) -> None:
    """Per-row work that needed the final stds: examples for each model, then ``on_chunk``.

    ``example_sink`` receives the first model's examples rows.
    """
    done = 0
    try:
        for chunk in read.spill:
            for i, ((scores, values), model_drivers) in enumerate(zip(chunk.results, drivers)):
                assert chunk.x is not None  # the read pass spills every chunk's x
                rows_table = model_drivers.add(
                    chunk.rows, chunk.ids, chunk.labels, scores, values,
                    finite_rows(scores, values), chunk.x,
                    table=example_sink is not None and i == 0)
                if rows_table is not None and example_sink is not None:
                    example_sink(rows_table)
            if on_chunk is not None:
                on_chunk(chunk)
            done += len(chunk.rows)
            progress("examples", done, read.moments.count)
    finally:
        read.spill.close()


def audit_result(model_pass: ModelPass, ranked: pd.DataFrame, checks: list[CheckResult],
                 drivers: ExampleDrivers, read: ReadPass, table: Table,
                 settings: AuditSettings, method: AttributionMethod,
                 method_details: dict | None = None) -> AuditResult:
    sums, prepared = model_pass.sums, model_pass.prepared
    # The report shows the examples of the outputs with a failed gate first.
    failed = {gate.output for check in checks for gate in check.failed}
    outputs = sorted(prepared.outputs, key=lambda o: o not in failed)
    return AuditResult(
        table=ranked, checks=checks, examples=drivers.best_first(outputs),
        features=list(table.features), outputs=prepared.outputs, rows=sums.rows,
        rows_dropped=read.dropped, nonfinite_rows=sums.nonfinite_rows,
        nonfinite_ids=sums.nonfinite_ids, nonfinite_allowed=settings.allow_nonfinite,
        model_path=str(prepared.loaded.path), model_format=prepared.loaded.format,
        data_path=str(table.path), proxies=[p.feature for p in settings.proxies],
        mean_scores={o: float(s) for o, s in zip(prepared.outputs,
                                                 sums.score_sum / max(sums.rows, 1))},
        method=method.name, method_details=method_details or {})


def audit_models(models: list[LoadedModel], chunks: Chunks, table: Table,
                 settings: AuditSettings, *, model_cfg: ModelConfig | None, source: object,
                 progress: Progress, example_sink: ExampleSink | None = None,
                 on_chunk: ChunkHook | None = None,
                 on_replay: Callable[[ReadPass, torch.Tensor],
                                     Callable[[SpilledChunk], None]] | None = None
                 ) -> tuple[list[AuditResult], ReadPass, torch.Tensor]:
    """Read, finish and replay for one or more models on the same rows."""
    method = make_method(settings, source)
    build_checks(settings, source)  # option errors before any data is read
    check_baseline(settings.baseline, table.features, source)
    reference = None
    if needs_prepass(method, settings, table.features):
        reference = statistics_pass(chunks, table, settings, progress=progress)
    if method.needs:  # without a pre-pass, a baseline that needs no data (zero, all given)
        method.prepare(baseline_vector(settings.baseline, reference, table.features),
                       reference.std if reference is not None
                       else torch.full((len(table.features),), float("nan"),
                                       dtype=torch.float64))
    read = read_pass(models, chunks, table, settings, method, model_cfg=model_cfg,
                     source=source, progress=progress, on_chunk=on_chunk,
                     medians=reference is None and settings.baseline == "median")
    try:
        std = feature_std(read, table)
        if reference is None:
            assert read.summary is not None
            reference = read.summary.reference(std)
        baseline = baseline_vector(settings.baseline, reference, table.features)
        details = method_details(method, settings, baseline, reference, table.features)
        finished = [finish_model(mp, table, std, method) for mp in read.models]
        drivers = [example_drivers(mp, table, baseline, settings, method)
                   for mp in read.models]
    except BaseException:
        read.spill.close()
        raise
    replay(read, drivers, progress=progress, example_sink=example_sink,
           on_chunk=on_replay(read, std) if on_replay else None)
    results = [audit_result(mp, ranked, checks, d, read, table, settings, method, details)
               for mp, (ranked, checks), d in zip(read.models, finished, drivers)]
    return results, read, std


def method_details(method: AttributionMethod, settings: AuditSettings, baseline: torch.Tensor,
                   reference: Reference, features: tuple[str, ...]) -> dict:
    """What summary.json and report.md say about the method: its name, what it measures,
    its units, the baseline (with the words each feature's baseline is called) and its
    parameters."""
    return {"name": method.name, "measures": method.description, "per_unit": method.per_unit,
            "baseline": describe_baseline(settings.baseline, baseline, features, reference),
            "baseline_labels": dict(zip(features, baseline_labels(settings.baseline,
                                                                   features))),
            "parameters": method.parameters()}


def _start(loaded: LoadedModel, x: torch.Tensor, table: Table, settings: AuditSettings,
           model_cfg: ModelConfig | None, source: object) -> ModelPass:
    prepared = prepare_model(loaded, x.to(loaded.device, loaded.dtype), model_cfg, source)
    return ModelPass(prepared=prepared,
                     sums=AttributionSums(len(prepared.outputs), len(table.features)),
                     checks=build_checks(settings, source))


def _attribute(method: AttributionMethod, prepared: PreparedModel, x: torch.Tensor,
               rows: np.ndarray) -> Attributions:
    # The engine knows no files: its errors (no gradient path, ...) get the model's path here.
    try:
        return method.attribute_rows(prepared.module, x, rows)
    except ModelError as exc:
        raise ModelError(f"{prepared.loaded.path}: {exc}") from None


def prepare_model(loaded: LoadedModel, x: torch.Tensor, model_cfg: ModelConfig | None,
                  source: object) -> PreparedModel:
    """Probe the model on a few rows: it must accept the features, return float scores per
    row, and score rows independently. Then select ``model.output`` if the config asks."""
    probe = x[: min(8, x.shape[0])]
    try:
        with torch.no_grad():
            y = loaded.module(probe)
    except Exception as exc:  # the model's own code may raise anything on a bad input
        raise ModelError(f"{loaded.path}: the model failed on a batch of {x.shape[1]} features "
                         f"({first_line(exc)}); does its input width match the data's "
                         "features?") from None
    try:
        n_outputs = as_output_matrix(y, probe.shape[0]).shape[1]
    except ModelError as exc:
        raise ModelError(f"{loaded.path}: {exc}") from None
    names = list(model_cfg.output_names) if model_cfg and model_cfg.output_names else None
    if names is not None and len(names) != n_outputs:
        raise ConfigError(f"{source}: model.output_names lists {len(names)} names but the "
                          f"model returns {n_outputs} output(s)")
    names = names or (["score"] if n_outputs == 1 else [f"output_{i}" for i in range(n_outputs)])
    module: Model = loaded.module
    selected = model_cfg.output if model_cfg else None
    if selected is not None:
        if isinstance(selected, str):
            if selected not in names:
                raise ConfigError(f"{source}: model.output '{selected}' is not one of "
                                  f"model.output_names ({', '.join(names)})")
            index = names.index(selected)
        else:
            index = selected
            if index >= n_outputs:
                raise ConfigError(f"{source}: model.output must be below {n_outputs} "
                                  f"(the model's output count) (got {index})")
        inner = loaded.module
        module = lambda inp: inner(inp).reshape(inp.shape[0], -1)[:, index : index + 1]  # noqa: E731
        names = [names[index]]
    try:
        check_row_independence(module, x)
    except ModelError as exc:
        raise ModelError(f"{loaded.path}: {exc}") from None
    return PreparedModel(loaded=loaded, module=module, outputs=names)


def _check_same_outputs(passes: list[ModelPass]) -> None:
    if len({len(p.prepared.outputs) for p in passes}) > 1:
        first, second = passes[0].prepared, passes[1].prepared
        raise ModelError(f"{first.loaded.path} returns {len(first.outputs)} output(s) but "
                         f"{second.loaded.path} returns {len(second.outputs)}; compare needs "
                         "the same outputs (select one with model.output)")
