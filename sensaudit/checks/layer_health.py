"""``audit.layer_health``: is the network well-conditioned, or do its layer Jacobians vanish or
explode through depth?

For every row, the norm of the score's Jacobian with respect to each layer's activations
(Frobenius over the audited outputs and the layer's units): how strongly a change at that
depth reaches the score. A layer is a leaf module of an ``nn.Module`` tree (its output, caught
with a forward hook) or, for a ``torch.export`` program, the last graph node of each leaf
module the export recorded (``nn_module_stack``), run through an FX interpreter. TorchScript
and plain functions keep their layers out of reach: only the input's row is measured.

For a deep linear stack y = W_L ... W_1 x, the Jacobian at layer l's output is W_L ... W_{l+1},
the same for every row, so its norm is the norm of that product (tests/test_layer_health.py).

Per layer: median and spread (5th..95th percentile) of the rows' norms, from a mergeable
log-scale histogram (:class:`sensaudit.stats.row_stats.LogHistogram`), the share of rows where it is
exactly zero (dead units), in layer_health.csv (its chart: each layer's ``median_norm`` over
the last layer's, sensaudit/reports/charts.py). The median at the first layer over the median
at the last is the product's change through depth: beyond ``max_ratio`` (or below its inverse)
the check warns (fails with ``gate: true``) that gradients explode (vanish) through the network.
"""

from __future__ import annotations

import functools
from typing import Any

import pandas as pd
import torch

from sensaudit.checks.base import (
    Check,
    CheckResult,
    Gate,
    ModelContext,
    Notice,
    Ranking,
    ReplayChunk,
)
from sensaudit.core.jacobian import as_output_matrix
from sensaudit.inputs.model_inputs import SelectedColumns
from sensaudit.settings.checks import LayerHealthSettings
from sensaudit.settings.sections import AuditSettings
from sensaudit.stats.row_stats import LogHistogram

INPUT = "(input)"
SUBJECT = "layer Jacobians"


class LayerHealth(Check):
    name = "layer_health"
    judges_the_model = True
    config_key = "layer_health"
    Options = LayerHealthSettings
    replays = True

    def __init__(self, settings: LayerHealthSettings):
        self.settings = settings
        self.layers: dict[str, tuple[str, LogHistogram]] = {}  # name -> (kind, norms), in order
        self.reachable = True

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> LayerHealth | None:
        return None if settings.layer_health is None else cls(settings.layer_health)

    def replay(self, chunk: ReplayChunk, context: ModelContext) -> None:
        kept = chunk.finite.nonzero().flatten()
        if not len(kept):
            return
        x = chunk.x[kept.to(chunk.x.device)]
        found = layer_jacobian_norms(context.module, context.model, x, context.output_index)
        if found is None:
            self.reachable = False
            found = [(INPUT, "input", _input_norms(context.model, x))]
        for name, kind, norms in found:
            if name not in self.layers:
                self.layers[name] = (kind, LogHistogram())
            finite = norms[torch.isfinite(norms)]
            self.layers[name][1].update(finite)

    def merge(self, other: Check) -> None:
        if not isinstance(other, LayerHealth):
            raise TypeError(f"cannot merge a {type(other).__name__} into LayerHealth")
        self.reachable = self.reachable and other.reachable
        for name, (kind, histogram) in other.layers.items():
            if name in self.layers:
                self.layers[name][1].merge(histogram)
            else:
                self.layers[name] = (kind, histogram)

    def finish(self, ranking: Ranking) -> CheckResult:
        result = CheckResult(self.name)
        s = self.settings
        rows: list[dict[str, Any]] = []
        for depth, (name, (kind, h)) in enumerate(self.layers.items()):
            p05, p95 = h.quantile(0.05), h.quantile(0.95)
            rows.append({"depth": depth, "layer": name, "kind": kind, "rows": h.count,
                         "median_norm": h.quantile(0.5), "p05_norm": p05,
                         "p25_norm": h.quantile(0.25), "p75_norm": h.quantile(0.75),
                         "p95_norm": p95, "min_norm": h.minimum if h.count else float("nan"),
                         "max_norm": h.maximum if h.count else float("nan"),
                         "geometric_mean_norm": h.geometric_mean,
                         "zero_rate": h.zeros / h.count if h.count else 0.0})
        table = pd.DataFrame(rows)
        inner = [r for r in rows if r["layer"] != INPUT]
        summary: dict[str, Any] = {"layers": rows, "reachable": self.reachable and bool(inner),
                                   "max_ratio": s.max_ratio}
        if len(inner) >= 2 and inner[-1]["median_norm"] > 0:
            ratio = inner[0]["median_norm"] / inner[-1]["median_norm"]
            broken = ratio > s.max_ratio or ratio < 1 / s.max_ratio
            trend = "explode" if ratio > 1 else "vanish"
            summary.update(depth_ratio=ratio, passed=not broken)
            details = {"depth_ratio": ratio, "first_layer": inner[0]["layer"],
                       "last_layer": inner[-1]["layer"], "max_ratio": s.max_ratio}
            if s.gate:
                result.gates.append(Gate(check=self.name, subject=SUBJECT, output="all",
                                         passed=not broken,
                                         limit=f"depth ratio within 1/{s.max_ratio:g}.."
                                               f"{s.max_ratio:g}", details=details))
            text = (f"from the last layer ({inner[-1]['layer']}, median norm "
                    f"{inner[-1]['median_norm']:.3g}) to the first ({inner[0]['layer']}, "
                    f"{inner[0]['median_norm']:.3g}) the median norm of the score's Jacobian "
                    f"changes {ratio:.3g}-fold")
            if broken:
                if not s.gate:
                    result.warnings.append(Notice(check=self.name, subject=SUBJECT,
                                                  output="all", details=details))
                result.findings.append(
                    f"**Layer Jacobians {trend} through depth**: {text}, beyond the "
                    f"{s.max_ratio:g}-fold limit. Changes at the early layers "
                    + ("are amplified on their way to the score: the model is ill-conditioned "
                       "and its input gradients unstable" if ratio > 1 else
                       "barely reach the score: saturated or dead units, whose gradients "
                       "carry little signal")
                    + " (see layer_health.csv).")
            else:
                result.notes.append(f"Layer Jacobian health: {text}, within the "
                                    f"{s.max_ratio:g}-fold limit.")
        elif not summary["reachable"]:
            result.notes.append("Layer Jacobian health: the model's layers cannot be reached "
                                "(TorchScript or a plain function), so only the input "
                                "Jacobian's norm is reported.")
        dead = [r for r in inner if r["zero_rate"] > 0.5]
        for r in dead:
            result.notes.append(f"Layer {r['layer']}: the score's Jacobian is exactly zero on "
                                f"{r['zero_rate']:.0%} of rows (dead units?).")
        result.tables["layer_health.csv"] = table
        result.report_tables["Layer Jacobian health (norm of d score / d activations)"] = (
            table[["depth", "layer", "kind", "median_norm", "p05_norm", "p95_norm",
                   "zero_rate"]] if len(table) else table)
        result.summary["layer_health"] = summary
        return result


def _input_norms(model: Any, x: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = as_output_matrix(model(x), x.shape[0])
        return _norms(y, [x])[0]


def _norms(y: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per row, the Frobenius norm of d y / d t for each t: float64 [rows] each."""
    squares = [torch.zeros(y.shape[0], dtype=torch.float64, device=y.device) for _ in tensors]
    m = y.shape[1]
    for i in range(m):
        grads = torch.autograd.grad(y[:, i].sum(), tensors, retain_graph=i < m - 1,
                                    allow_unused=True)
        for k, grad in enumerate(grads):
            if grad is not None:
                squares[k] += grad.detach().double().reshape(grad.shape[0], -1).square().sum(1)
    return [s.sqrt().cpu() for s in squares]


def layer_jacobian_norms(module: object, model: Any, x: torch.Tensor,
                         output_index: int | None = None
                         ) -> list[tuple[str, str, torch.Tensor]] | None:
    """(layer, kind, per-row norms float64 [rows]) for the input and each reachable layer, in
    the order they run; None when the layers cannot be reached.

    ``model`` is the audited callable (its outputs as audited), ``module`` the model as loaded
    (inside ``model``), ``output_index`` the output ``model`` selects from ``module``'s.
    """
    rows = x.shape[0]
    captured: list[tuple[str, str, torch.Tensor]] = []

    def keep(name: str, kind: str, out: object) -> None:
        if (isinstance(out, torch.Tensor) and out.is_floating_point() and out.requires_grad
                and out.dim() >= 1 and out.shape[0] == rows):
            seen = sum(1 for n, _, _ in captured if n == name or n.startswith(name + "#"))
            captured.append((name if not seen else f"{name}#{seen + 1}", kind, out))

    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        fed = x
        if isinstance(module, SelectedColumns):  # compare: the model takes some of x's columns
            fed, module = module.select(x), module.inner
        graph_layers = _graph_layers(module)
        if graph_layers:
            if not isinstance(module, torch.fx.GraphModule):  # _graph_layers found a graph
                raise TypeError(f"expected a graph module, got {type(module).__name__}")
            out = _Tap(module, graph_layers, keep).run(fed)
            y = as_output_matrix(out, rows)
            if output_index is not None:
                y = y.reshape(rows, -1)[:, output_index : output_index + 1]
        elif isinstance(module, torch.nn.Module) and not isinstance(module,
                                                                     torch.jit.ScriptModule):
            leaves = [(n, m) for n, m in module.named_modules() if n and not any(m.children())]
            handles = [m.register_forward_hook(functools.partial(_hook, keep, n))
                       for n, m in leaves]
            try:
                y = as_output_matrix(model(x), rows)
            finally:
                for handle in handles:
                    handle.remove()
        else:
            return None
        if not captured:
            return None
        norms = _norms(y, [x] + [t for _, _, t in captured])
    return [(INPUT, "input", norms[0])] + [(n, k, v) for (n, k, _), v in
                                            zip(captured, norms[1:], strict=True)]


def _hook(keep: Any, name: str, module: torch.nn.Module, inputs: object, out: object) -> None:
    keep(name, type(module).__name__, out)


def _graph_layers(module: object) -> dict[torch.fx.Node, tuple[str, str]]:
    """For an exported program's graph: the last node of each leaf module, by the module
    path and class the export recorded."""
    if not isinstance(module, torch.fx.GraphModule):
        return {}
    last: dict[str, tuple[torch.fx.Node, str]] = {}
    for node in module.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op not in ("call_function", "call_method") or not stack or len(stack) < 2:
            continue
        path, kind = list(stack.values())[-1]
        last[path] = (node, str(kind).rsplit(".", 1)[-1])
    return {node: (path, kind) for path, (node, kind) in last.items()}


class _Tap(torch.fx.Interpreter):
    """Runs a graph as it is, handing the chosen nodes' outputs to ``keep``."""

    def __init__(self, module: torch.fx.GraphModule,
                 layers: dict[torch.fx.Node, tuple[str, str]], keep: Any):
        super().__init__(module)
        self.layers = layers
        self.keep = keep

    def run_node(self, n: torch.fx.Node) -> Any:
        out = super().run_node(n)
        if n in self.layers:
            self.keep(*self.layers[n], out)
        return out
