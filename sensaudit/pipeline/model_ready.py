"""A scorer made ready for the audit: probed on a few rows (input width, float scores per row,
rows scored independently), ``model.transform`` and ``model.output`` applied, and its
attributions computed with its file named in any error the model's own code raises."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sensaudit.checks.base import CheckResult, Notice
from sensaudit.core.errors import ConfigError, ModelError, first_line
from sensaudit.core.jacobian import Model, as_output_matrix, check_row_independence
from sensaudit.core.transforms import transformed
from sensaudit.inputs.models import LoadedModel
from sensaudit.inputs.table_layout import Table
from sensaudit.methods.base import AttributionMethod, Attributions
from sensaudit.settings.sections import ModelConfig


@dataclass
class PreparedModel:
    """A scorer wrapped to return only the audited outputs, with their names."""

    loaded: LoadedModel
    module: Model
    outputs: list[str]
    output_index: int | None = None  # the output of loaded.module that model.output selects


def prepare_model(loaded: LoadedModel, x: torch.Tensor, model_cfg: ModelConfig | None,
                  source: object, table: Table | None = None) -> PreparedModel:
    """Probe the model on a few rows: it must accept the features, return float scores per
    row, and score rows independently. Then select ``model.output`` if the config asks."""
    probe = x[: min(8, x.shape[0])]
    try:
        with torch.no_grad():
            y = loaded.module(probe)
    except Exception as exc:  # the model's own code may raise anything on a bad input
        left_out = ""
        if table is not None and table.skipped:
            left_out = (f"; the data's text column(s) {', '.join(table.skipped[:5])} are not "
                        "features unless data.features or model.features lists them")
        raise ModelError(f"{loaded.path}: the model failed on a batch of {x.shape[1]} features "
                         f"({first_line(exc)}); does its input width match the data's "
                         f"features?{left_out}") from None
    try:
        n_outputs = as_output_matrix(y, probe.shape[0]).shape[1]
    except ModelError as exc:
        raise ModelError(f"{loaded.path}: {exc}") from None
    names = list(model_cfg.output_names) if model_cfg and model_cfg.output_names else None
    if names is not None and len(names) != n_outputs:
        raise ConfigError(f"{source}: model.output_names lists {len(names)} names but the "
                          f"model returns {n_outputs} output(s)")
    names = names or (["score"] if n_outputs == 1 else [f"output_{i}" for i in range(n_outputs)])
    module: Model = transformed(loaded.module, model_cfg.transform if model_cfg else "none",
                                n_outputs, source)
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
        inner = module
        module = lambda inp: inner(inp).reshape(inp.shape[0], -1)[:, index : index + 1]  # noqa: E731
        names = [names[index]]
        selected = index
    try:
        check_row_independence(module, x)
    except ModelError as exc:
        raise ModelError(f"{loaded.path}: {exc}") from None
    return PreparedModel(loaded=loaded, module=module, outputs=names,
                         output_index=selected if isinstance(selected, int) else None)


def attribute_chunk(method: AttributionMethod, prepared: PreparedModel, x: torch.Tensor,
               rows: np.ndarray) -> Attributions:
    # The engine knows no files: its errors (no gradient path, ...) get the model's path here.
    try:
        return method.attribute_rows(prepared.module, x, rows)
    except ModelError as exc:
        raise ModelError(f"{prepared.loaded.path}: {exc}") from None
    except Exception as exc:
        # The model's own code raising (only on larger batches, only with gradients enabled)
        # is a property of the input model, not a sensaudit bug; --debug shows the chain.
        raise ModelError(f"{prepared.loaded.path}: the model raised while computing "
                         f"attributions on a batch of {x.shape[0]:,} rows with gradients "
                         f"enabled ({type(exc).__name__}: {first_line(exc)}); a scorer must "
                         "accept any batch size and support autograd") from exc


def precision_warnings(features: list[str], data_std: torch.Tensor, seen_std: torch.Tensor,
                       dtype: torch.dtype) -> CheckResult:
    """Warn where the model's dtype cannot hold a feature's spread: values such as 1e6 plus
    millimetre noise vary in the data but are (nearly) constant once rounded to float32, so the
    audit's figures (computed on the data's std) describe a variation the model never saw."""
    result = CheckResult("input_precision")
    name = str(dtype).replace("torch.", "")
    lost = (data_std > 0) & ((seen_std - data_std).abs() > 0.01 * data_std)
    for j in lost.nonzero().flatten().tolist():
        result.warnings.append(Notice(check="input_precision", subject=features[j],
                                      output="", details={"std": float(data_std[j]),
                                                          f"std_in_{name}": float(seen_std[j])}))
        result.findings.append(
            f"**{features[j]}** varies with std {data_std[j]:.4g} in the data but "
            f"{seen_std[j]:.4g} once rounded to the model's {name} inputs: its values are too "
            "large for their spread at that precision, so the model sees it (nearly) constant "
            "and its figures here describe a variation the model never saw. Centre or rescale "
            "the column before training and auditing.")
    return result


def narrower(a: torch.dtype, b: torch.dtype) -> bool:
    return a.is_floating_point and b.is_floating_point and torch.finfo(a).eps > torch.finfo(b).eps
