"""The library entry points: ``run_audit(load_config(path))`` is what ``sensaudit run`` does.

Computing and writing are separate: :func:`audit` returns an :class:`AuditResult` and
:func:`compare_models` a :class:`ComparisonResult`; :func:`run_audit` and :func:`run_compare`
also write the reports, atomically (``run_audit`` streams per-example rows to disk as they are
produced). Library code never prints; pass ``progress`` to follow long runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from .analysis import AuditResult, FeatureMoments, GradientAccumulator, evaluate_gates, findings
from .compare import (
    AgreementAccumulator,
    BootstrapMoments,
    BootstrapSensitivity,
    ComparisonResult,
    PoissonBootstrap,
    comparison_findings,
    comparison_table,
    rank_agreement,
)
from .config import AuditSettings, Config, DataConfig, ModelConfig, ProxyLimit
from .engine import Model, as_output_matrix, check_row_independence, scores_and_jacobian
from .errors import ConfigError, DataError, ModelError, did_you_mean, first_line
from .inputs import tables as data_mod
from .inputs.models import LoadedModel, float_dtype, load_model, resolve_device
from .reports import ReportWriter, StagedReport, open_writers

# progress(stage, rows_done, rows_total): stage is "scan" (first pass: feature statistics)
# or "audit" (second pass: gradients); rows_total is None while unknown.
Progress = Callable[[str, int, "int | None"], None]
ExampleSink = Callable[[pd.DataFrame], None]


@dataclass
class PreparedModel:
    """A scorer wrapped to return only the audited outputs, with their names."""

    module: Model
    outputs: list[str]


def run_audit(config: Config, *, progress: Progress | None = None,
              trust_model_code: bool | None = None,
              trust_pickle: bool | None = None) -> tuple[AuditResult, list[Path]]:
    """Audit as the config says and write its reports; return the result and files written."""
    with StagedReport(config.report.dir, config.report.formats) as staged:
        writers = open_writers(staged, config.report.formats)
        sinks = [w for w in writers if type(w).examples is not ReportWriter.examples]
        result = audit(config, progress=progress, trust_model_code=trust_model_code,
                       trust_pickle=trust_pickle,
                       example_sink=(lambda rows: [w.examples(rows) for w in sinks])
                       if sinks else None)
        for writer in writers:
            writer.audit(result)
        written = staged.commit()
    return result, written


def audit(config: Config, *, progress: Progress | None = None,
          trust_model_code: bool | None = None, trust_pickle: bool | None = None,
          example_sink: ExampleSink | None = None) -> AuditResult:
    """Load the config's model and data, compute every row's Jacobian, rank, and gate."""
    if config.model is None:
        raise ConfigError(f"{config.source}: missing required key 'model'")
    table = data_mod.open_table(config.data)
    check_proxies(config, table.features)
    loaded = load_model(config.model, trust_model_code=trust_model_code,
                        trust_pickle=trust_pickle)
    return audit_chunks(
        loaded, lambda dtype: data_mod.iter_chunks(table, config.data, dtype), table,
        config=config, progress=progress, example_sink=example_sink)


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
    config = Config(data=data_cfg, report=None, audit=settings, source=name)  # type: ignore[arg-type]
    table = data_mod.frame_table(frame, data_cfg)
    check_proxies(config, table.features)
    if device is None:
        target = _parameter_device(model)
    else:
        target = resolve_device(device)
    was_training = isinstance(model, torch.nn.Module) and model.training
    if was_training:
        model.eval()
    try:
        loaded = LoadedModel(module=model, path=Path("<in-memory model>"), format="in-memory",
                             device=target, dtype=float_dtype(model))
        return audit_chunks(loaded, lambda dt: data_mod.iter_frame_chunks(frame, table,
                                                                          data_cfg, dt),
                            table, config=config)
    finally:
        if was_training:
            model.train()


def _parameter_device(model: object) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for tensor in [*model.parameters(), *model.buffers()]:
            return tensor.device
    return torch.device("cpu")


def check_proxies(config: Config, features: tuple[str, ...]) -> None:
    """Every declared proxy must be an audited feature, declared once: a typo must not
    disable a gate."""
    seen: set[str] = set()
    for i, proxy in enumerate(config.audit.proxies):
        if proxy.feature in seen:
            raise ConfigError(f"{config.source}: audit.proxies[{i}].feature '{proxy.feature}' "
                              "is declared twice")
        seen.add(proxy.feature)
        if proxy.feature not in features:
            raise ConfigError(f"{config.source}: audit.proxies[{i}].feature '{proxy.feature}' "
                              f"is not an audited feature{did_you_mean(proxy.feature, features)}"
                              " (features: "
                              f"{', '.join(features)})")


def audit_chunks(loaded: LoadedModel, chunks: Callable[[torch.dtype], Iterator[data_mod.Chunk]],
                 table: data_mod.Table, *, config: Config, progress: Progress | None = None,
                 example_sink: ExampleSink | None = None) -> AuditResult:
    """The two passes over the data: feature statistics, then gradients."""
    report = progress or _no_progress
    moments, dropped = _scan_features(chunks, table, report)
    passes = _gradient_pass([loaded], chunks, table, moments, config, report,
                            example_sink=example_sink)
    (prepared, acc), = passes
    return _finish(acc, prepared, loaded, table, config.audit, dropped)


ChunkHook = Callable[[data_mod.Chunk, list[tuple[torch.Tensor, torch.Tensor]]], None]


def _gradient_pass(models: list[LoadedModel],
                   chunks: Callable[[torch.dtype], Iterator[data_mod.Chunk]],
                   table: data_mod.Table, moments: FeatureMoments, config: Config,
                   report: Progress, *, example_sink: ExampleSink | None = None,
                   on_chunk: ChunkHook | None = None
                   ) -> list[tuple[PreparedModel, GradientAccumulator]]:
    """Second pass: every model's scores and Jacobians on the same chunks, accumulated.

    Models are probed on the first chunk (input width, output shape, row independence).
    ``on_chunk(chunk, [(scores, jacobian) per model])`` sees each chunk's results, on the CPU.
    """
    settings = config.audit
    dtype = models[0].dtype if len(models) == 1 else torch.float64
    prepared: list[PreparedModel] = []
    accs: list[GradientAccumulator] = []
    done = 0
    for chunk in chunks(dtype):
        if not len(chunk.x):
            continue
        if not prepared:
            prepared = [prepare_model(m, chunk.x.to(m.device, m.dtype), config) for m in models]
            _check_same_outputs(models, prepared)
            accs = [_accumulator(table, p, moments, settings) for p in prepared]
        results = []
        for loaded, prep, acc in zip(models, prepared, accs):
            x = chunk.x.to(loaded.device, loaded.dtype)
            scores, jac = _jacobian(loaded, prep.module, x, settings.batch_size)
            # Statistics are float64 on the CPU; convert once for the accumulator and the hook.
            scores, jac = scores.to("cpu", torch.float64), jac.to("cpu", torch.float64)
            frame = acc.update(chunk.ids, scores, jac, chunk.labels,
                               examples=example_sink is not None)
            if example_sink is not None:
                example_sink(frame)
            results.append((scores, jac))
        if on_chunk is not None:
            on_chunk(chunk, results)
        done += len(chunk.x)
        report("audit", done, moments.count)
    if not prepared:  # every row dropped between the two passes
        raise DataError(f"{table.path}: no usable rows left to audit")
    return list(zip(prepared, accs))


def _no_progress(stage: str, done: int, total: int | None) -> None:
    pass


def _jacobian(loaded: LoadedModel, module: Model, x: torch.Tensor, batch_size: int | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    # The engine knows no files: its errors (no gradient path, ...) get the model's path here.
    try:
        return scores_and_jacobian(module, x, batch_size=batch_size)
    except ModelError as exc:
        raise ModelError(f"{loaded.path}: {exc}") from None


def _scan_features(chunks: Callable[[torch.dtype], Iterator[data_mod.Chunk]],
                   table: data_mod.Table, report: Progress,
                   extra: Callable[[data_mod.Chunk], None] | None = None
                   ) -> tuple[FeatureMoments, int]:
    """First pass: exact feature means and standard deviations, and rows dropped."""
    moments = FeatureMoments(len(table.features))
    dropped = 0
    for chunk in chunks(torch.float64):
        moments.update(chunk.x)
        if extra is not None and len(chunk.x):
            extra(chunk)
        dropped += chunk.dropped
        report("scan", moments.count + dropped, None)
    if moments.count < 2:
        raise DataError(f"{table.path}: {moments.count} usable row(s); an audit needs at least 2 "
                        "to measure how much each feature varies")
    # Values near float64's limit (1e154 and up) overflow the variance, and an infinite std
    # would make every share NaN.
    overflow = (~torch.isfinite(moments.std)).nonzero().flatten().tolist()
    if overflow:
        raise DataError(f"{table.path}: column '{table.features[overflow[0]]}' has values too "
                        "large to measure how much it varies (its variance overflows); rescale "
                        "it")
    return moments, dropped


def _accumulator(table: data_mod.Table, prepared: PreparedModel, moments: FeatureMoments,
                 settings: AuditSettings) -> GradientAccumulator:
    return GradientAccumulator(list(table.features), prepared.outputs, moments.std,
                               top_k=settings.top_k,
                               proxies=[p.feature for p in settings.proxies],
                               keep_examples=settings.examples_in_report)


def _finish(acc: GradientAccumulator, prepared: PreparedModel, loaded: LoadedModel,
            table: data_mod.Table, settings: AuditSettings, dropped: int) -> AuditResult:
    """Rank, gate and explain one model's accumulated statistics."""
    if acc.rows == 0 and acc.nonfinite_rows:
        # Even under audit.allow_nonfinite, 0 rows audited leaves nothing to rank.
        ids = ", ".join(map(str, acc.nonfinite_ids[:5]))
        raise ModelError(f"{loaded.path}: the model gave non-finite scores or gradients on all "
                         f"{acc.nonfinite_rows:,} rows (first ids: {ids}), so there is nothing "
                         "to rank")
    if acc.rows and not bool((acc.sum_abs > 0).any()):
        raise ModelError(f"{loaded.path}: every gradient is exactly zero on all {acc.rows:,} rows:"
                         " the score does not respond to any feature (a step function, rounding,"
                         " or a constant output?), so there is nothing to rank")
    features = list(table.features)
    sensitivity = acc.sensitivity()
    gates = evaluate_gates(sensitivity, settings.proxies, settings.dominance_warning)
    return AuditResult(
        table=sensitivity, gates=gates, findings=findings(sensitivity, gates, len(features)),
        examples=acc.strongest_examples(), features=features, outputs=prepared.outputs,
        rows=acc.rows, rows_dropped=dropped, nonfinite_rows=acc.nonfinite_rows,
        nonfinite_ids=acc.nonfinite_ids, nonfinite_allowed=settings.allow_nonfinite,
        model_path=str(loaded.path), model_format=loaded.format, data_path=str(table.path),
        proxies=[p.feature for p in settings.proxies],
        mean_scores={o: float(s) for o, s in zip(prepared.outputs,
                                                 acc.score_sum / max(acc.rows, 1))},
    )


def prepare_model(loaded: LoadedModel, x: torch.Tensor, config: Config) -> PreparedModel:
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
    model_cfg = config.model
    names = list(model_cfg.output_names) if model_cfg and model_cfg.output_names else None
    if names is not None and len(names) != n_outputs:
        raise ConfigError(f"{config.source}: model.output_names lists {len(names)} names but the "
                          f"model returns {n_outputs} output(s)")
    names = names or (["score"] if n_outputs == 1 else [f"output_{i}" for i in range(n_outputs)])
    module: Model = loaded.module
    selected = model_cfg.output if model_cfg else None
    if selected is not None:
        if isinstance(selected, str):
            if selected not in names:
                raise ConfigError(f"{config.source}: model.output '{selected}' is not one of "
                                  f"model.output_names ({', '.join(names)})")
            index = names.index(selected)
        else:
            index = selected
            if index >= n_outputs:
                raise ConfigError(f"{config.source}: model.output must be below {n_outputs} "
                                  f"(the model's output count) (got {index})")
        inner = loaded.module
        module = lambda inp: inner(inp).reshape(inp.shape[0], -1)[:, index : index + 1]  # noqa: E731
        names = [names[index]]
    try:
        check_row_independence(module, x)
    except ModelError as exc:
        raise ModelError(f"{loaded.path}: {exc}") from None
    return PreparedModel(module=module, outputs=names)



def compare_models(config: Config, old_path: str | Path, new_path: str | Path, *,
                   data_path: str | Path | None = None, progress: Progress | None = None,
                   trust_model_code: bool | None = None,
                   trust_pickle: bool | None = None) -> ComparisonResult:
    """Audit two models on the same rows and measure how their sensitivities moved.

    The config's data, proxies and compare settings apply; its ``model`` section, if any,
    only lends both models its class/kwargs/output/device settings: its ``trust_model_code``
    does not carry over to the files named here (pass ``trust_model_code=True`` for that;
    ``trust_pickle`` is its deprecated old name).
    """
    if data_path is not None:
        config = replace(config, data=replace(config.data, path=Path(data_path)))
    settings, cmp = config.audit, config.compare
    table = data_mod.open_table(config.data)
    check_proxies(config, table.features)
    base = config.model or ModelConfig(path=Path(old_path))
    models = [load_model(replace(base, path=Path(p), trust_model_code=False),
                         trust_model_code=trust_model_code, trust_pickle=trust_pickle)
              for p in (old_path, new_path)]
    chunks = lambda dtype: data_mod.iter_chunks(table, config.data, dtype)  # noqa: E731
    report = progress or _no_progress
    bootstrap = PoissonBootstrap(cmp.bootstrap_samples, cmp.seed)
    boot_moments = BootstrapMoments(bootstrap, len(table.features))
    moments, dropped = _scan_features(chunks, table, report,
                                      extra=lambda c: boot_moments.update(c.rows, c.x))
    std = moments.std
    boots = [BootstrapSensitivity(bootstrap) for _ in models]
    agreement = AgreementAccumulator(keep=settings.examples_in_report)

    def bootstrap_and_agreement(chunk: data_mod.Chunk, results: list) -> None:
        weights = bootstrap.weights(chunk.rows)
        # Each model's intervals use the rows its own statistics use; agreement needs both.
        for (scores, jac), boot in zip(results, boots):
            boot.update(weights, jac, _finite_rows(scores, jac))
        (s_old, j_old), (s_new, j_new) = results
        finite = _finite_rows(s_old, j_old) & _finite_rows(s_new, j_new)
        agreement.update(chunk.ids, s_old, s_new, j_old * std, j_new * std, finite)

    passes = _gradient_pass(models, chunks, table, moments, config, report,
                            on_chunk=bootstrap_and_agreement)
    old, new = (_finish(acc, prep, loaded, table, settings, dropped)
                for (prep, acc), loaded in zip(passes, models))
    boot_std = boot_moments.std
    table_cmp = comparison_table(old, new, boots[0].shares(boot_std), boots[1].shares(boot_std),
                                 cmp.confidence)
    overall = {output: {**rank_agreement(table_cmp, output, cmp.top_k),
                        **agreement.summary(i, output)}
               for i, output in enumerate(new.outputs)}
    increases = []
    if cmp.max_proxy_share_increase is not None:
        proxies = {p.feature for p in settings.proxies}
        grown = table_cmp[table_cmp["feature"].isin(proxies)
                          & (table_cmp["delta_share"] > cmp.max_proxy_share_increase)]
        increases = [{"feature": r.feature, "output": r.output, "delta_share": r.delta_share,
                      "margin": cmp.max_proxy_share_increase} for r in grown.itertuples()]
    result = ComparisonResult(
        table=table_cmp, overall=overall, old=old, new=new, proxy_increases=increases,
        settings={"bootstrap_samples": cmp.bootstrap_samples, "confidence": cmp.confidence,
                  "seed": cmp.seed, "top_k": cmp.top_k,
                  "max_proxy_share_increase": cmp.max_proxy_share_increase})
    result.findings = comparison_findings(result, [p.feature for p in settings.proxies])
    return result


def run_compare(config: Config, old_path: str | Path, new_path: str | Path, *,
                out_dir: str | Path | None = None, data_path: str | Path | None = None,
                progress: Progress | None = None, trust_model_code: bool | None = None,
                trust_pickle: bool | None = None) -> tuple[ComparisonResult, list[Path]]:
    """``compare_models`` and write comparison.csv/json/md atomically into ``out_dir``
    (default: the config's report.dir)."""
    target = Path(out_dir) if out_dir is not None else config.report.dir
    with StagedReport(target, config.report.formats) as staged:
        result = compare_models(config, old_path, new_path, data_path=data_path,
                                progress=progress, trust_model_code=trust_model_code,
                                trust_pickle=trust_pickle)
        for writer in open_writers(staged, config.report.formats):
            writer.comparison(result)
        written = staged.commit()
    return result, written


def _check_same_outputs(models: list[LoadedModel], prepared: list[PreparedModel]) -> None:
    if len({len(p.outputs) for p in prepared}) > 1:
        raise ModelError(f"{models[0].path} returns {len(prepared[0].outputs)} output(s) but "
                         f"{models[1].path} returns {len(prepared[1].outputs)}; compare needs "
                         "the same outputs (select one with model.output)")


def _finite_rows(scores: torch.Tensor, jac: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(jac).flatten(1).all(1) & torch.isfinite(scores).all(1)
