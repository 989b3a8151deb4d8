"""Draw a :class:`~sensaudit.reports.charts.ChartPlan` with matplotlib (the ``charts``
extra), through its object API only: no pyplot, no backend switch, nothing global touched in a
caller's process beyond a temporary rc context.

Every number drawn is read from ``plan.data``; nothing is computed here.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sensaudit.checks.layer_health import INPUT as INPUT_LAYER
from sensaudit.core.text_safety import visible
from sensaudit.reports.charts import ChartPlan

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FLAGGED, PROXY, OTHER, OLD = "#c62828", "#ef8f00", "#1f5fa8", "#9e9e9e"
WIDTH_IN, DPI = 7.5, 100
_LABEL_CHARS = 38
# Plain text everywhere: a feature named "cost_$" must not switch matplotlib into math mode,
# and the same PNG bytes come out wherever the fonts bundled with matplotlib are used.
_RC: dict[Any, Any] = {"text.parse_math": False, "font.family": "DejaVu Sans", "font.size": 9,
       "axes.spines.top": False, "axes.spines.right": False}


def render(plan: ChartPlan) -> Figure:
    """The chart as a matplotlib Figure (not attached to pyplot)."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(_RC):
        rows = max(len(plan.data), 1)
        per_row = 0.46 if plan.kind == "compare" else 0.3
        height = (3.9 if plan.kind == "histogram" else 4.6 if plan.kind == "proxy_map"
                  else 1.9 + per_row * rows)
        figure = Figure(figsize=(WIDTH_IN, height), dpi=DPI, layout="constrained")
        axes = figure.add_subplot()
        _DRAW[plan.kind](axes, plan)
        axes.set_title(_wrap(visible(plan.title)), loc="left", fontsize=10, fontweight="bold")
    return figure


def png_bytes(plan: ChartPlan) -> bytes:
    """The chart as PNG bytes, without a timestamp or version in its metadata."""
    from matplotlib import rc_context

    figure = render(plan)
    buffer = io.BytesIO()
    with rc_context(_RC):
        figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _shares(axes: Axes, plan: ChartPlan) -> None:
    data = plan.data
    y = np.arange(len(data))
    colors = [FLAGGED if r.flagged else PROXY if r.proxy else OTHER for r in data.itertuples()]
    axes.barh(y, data["share"], color=colors, height=0.7)
    for i, r in enumerate(data.itertuples()):
        axes.text(r.share, i, f" {r.share:.1%}", va="center", fontsize=8)
    groups = data["group"] if "group" in data else [False] * len(data)
    _feature_axis(axes, y, [f"{f} (group)" if g else f
                            for f, g in zip(data["feature"], groups, strict=True)])
    axes.set_xlabel("share of the score's sensitivity (%)")
    axes.set_xlim(0, max(float(data["share"].max()) * 1.18, 0.05))
    axes.xaxis.set_major_formatter(_percent())
    from matplotlib.patches import Patch

    handles = [Patch(color=OTHER, label="feature")]
    if (data["proxy"] & ~data["flagged"]).any():
        handles.append(Patch(color=PROXY, label="declared proxy, gate passed"))
    if data["flagged"].any():
        handles.append(Patch(color=FLAGGED, label="fails a gate"))
    _legend(axes, handles)


def _distribution(axes: Axes, plan: ChartPlan) -> None:
    data = plan.data
    stats = [{"label": "", "med": r.median, "q1": r.q1, "q3": r.q3, "whislo": r.whisker_low,
              "whishi": r.whisker_high, "mean": r.mean} for r in data.itertuples()]
    y = np.arange(len(data))
    axes.bxp(stats, positions=y, orientation="horizontal", showfliers=False, showmeans=True,
             widths=0.6, patch_artist=True,
             boxprops={"facecolor": "#d6e4f5", "edgecolor": OTHER},
             medianprops={"color": OTHER, "linewidth": 1.6},
             meanprops={"marker": "D", "markerfacecolor": "white",
                        "markeredgecolor": "#333333", "markersize": 4})
    axes.axvline(0, color="#555555", linewidth=0.8)
    _feature_axis(axes, y, data["feature"])
    axes.set_xlabel("scaled gradient per row: gradient x std (score units); diamond: mean"
                    if plan.options.get("per_unit", True) else
                    "attribution per row (score units); diamond: mean")


def _compare(axes: Axes, plan: ChartPlan) -> None:
    data = plan.data
    y = np.arange(len(data))
    # A feature only one model takes (compare of models with other inputs) has no change: its
    # bar is empty and its status is written instead.
    change = (data["delta_share"] * 100).fillna(0.0)
    colors = [OTHER if r.changed else OLD for r in data.itertuples()]
    error = None
    if "delta_share_low" in data:
        # Clipped at 0: a replicate's quantile can sit a rounding error past the change.
        error = np.vstack([(change - data["delta_share_low"] * 100).clip(lower=0).fillna(0),
                           (data["delta_share_high"] * 100 - change).clip(lower=0).fillna(0)])
    axes.barh(y, change, color=colors, height=0.6, xerr=error,
              error_kw={"elinewidth": 0.9, "capsize": 2, "ecolor": "#333333"})
    axes.axvline(0, color="#555555", linewidth=0.8)
    limit = plan.options.get("min_change", 0.0)
    if limit:
        for side in (-limit, limit):
            axes.axvline(side, color="#777777", linewidth=0.8, linestyle="--")
    high = (data["delta_share_high"] * 100 if "delta_share_high" in data else change).fillna(0)
    low = (data["delta_share_low"] * 100 if "delta_share_low" in data else change).fillna(0)
    for i, r in enumerate(data.itertuples()):
        status = getattr(r, "status", "common")
        text = (f"{r.delta_share * 100:+.1f}" + (" *" if r.changed else "")
                if status == "common" else status)
        if status != "common" or r.delta_share >= 0:
            axes.text(max(float(high.iloc[i]), 0.0), i, f"  {text}", va="center", fontsize=8)
        else:
            axes.text(min(float(low.iloc[i]), 0.0), i, f"{text}  ", va="center", ha="right",
                      fontsize=8)
    labels = [f"{f}  ({'fails its gate' if n else 'gate cleared'})" if o != n else f
              for f, o, n in zip(data["feature"], data["flagged_old"], data["flagged_new"],
                                 strict=True)]
    _feature_axis(axes, y, labels)
    reach = float(np.nanmax(np.abs(np.concatenate([low, high, [limit]])))) if len(data) else 1
    axes.set_xlim(-reach * 1.35 - 0.5, reach * 1.35 + 0.5)
    axes.set_xlabel("change in share: new minus old (percentage points)")
    from matplotlib.patches import Patch

    handles = [Patch(color=OTHER, label="changed (*)")]
    if not data["changed"].all():
        handles.append(Patch(color=OLD, label="not marked: within its noise or under "
                                              "compare.min_change"))
    _legend(axes, handles)


def _histogram(axes: Axes, plan: ChartPlan) -> None:
    data = plan.data
    widths = data["shift_to"] - data["shift_from"]
    axes.bar(data["shift_from"], data["rows"], width=widths, align="edge", color=OTHER,
             edgecolor="white", linewidth=0.4)
    p95, limit = plan.options.get("p95"), plan.options.get("limit")
    if p95 is not None:
        axes.axvline(p95, color="#333333", linewidth=1.2,
                     label=f"95th percentile of the rows: {p95:.4g}")
    if limit is not None:
        axes.axvline(limit, color=FLAGGED, linewidth=1.4, linestyle="--",
                     label=f"limit on the 95th percentile (robustness.max_shift): {limit:g}")
    largest = plan.options.get("largest")
    if largest is not None:
        axes.plot([], [], " ", label=f"largest shift of any row: {largest:.4g}")
    axes.set_xlabel("largest score shift the attack reaches at the row (score units)")
    axes.set_ylabel("rows")
    axes.set_xlim(0, float(data["shift_to"].max()) * 1.05)
    _legend(axes, None)


def _rates(axes: Axes, plan: ChartPlan) -> None:
    data = plan.data
    y = np.arange(len(data))
    colors = [OTHER if r.passed else FLAGGED for r in data.itertuples()]
    axes.barh(y, data["violation_rate"], color=colors, height=0.6)
    for i, r in enumerate(data.itertuples()):
        axes.plot([r.max_violation_rate] * 2, [i - 0.4, i + 0.4], color=FLAGGED,
                  linestyle="--", linewidth=1.4)
        axes.text(max(r.violation_rate, r.max_violation_rate), i,
                  f"  {r.violation_rate:.1%} (limit {r.max_violation_rate:.1%})", va="center",
                  fontsize=8)
    _feature_axis(axes, y, data["label"])
    top = float(max(data["violation_rate"].max(), data["max_violation_rate"].max()))
    axes.set_xlim(0, max(top * 1.6, 0.02))
    axes.xaxis.set_major_formatter(_percent(decimals=None))
    axes.set_xlabel("rows where the score moves against the expected direction (%)")


def _evidence(axes: Axes, plan: ChartPlan) -> None:
    data = plan.data
    y = np.arange(len(data))
    colors = [FLAGGED if r.suspect else PROXY if r.declared else OTHER
              for r in data.itertuples()]
    axes.barh(y, data["share"], color=colors, height=0.6)
    has_evidence = "evidence_share" in data and data["evidence_share"].notna().any()
    if has_evidence:
        axes.hlines(y, data["evidence_share"], data["evidence_high"], color="#333333",
                    linewidth=2.2)
        axes.plot(data["evidence_share"], y, "D", color="#333333", markersize=4)
        if "evidence_limit" in data:
            for i, value in enumerate(data["evidence_limit"]):
                axes.plot([value] * 2, [i - 0.35, i + 0.35], color=FLAGGED, linestyle="--",
                          linewidth=1.2)
    for i, r in enumerate(data.itertuples()):
        axes.text(r.share, i, f" {r.share:.1%}", va="bottom", fontsize=7)
    _feature_axis(axes, y, data["feature"])
    columns = [c for c in ("share", "evidence_high", "evidence_limit") if c in data]
    top = float(np.nanmax(data[columns].to_numpy(dtype=float)))
    axes.set_xlim(0, max(top * 1.12, 0.05))
    axes.xaxis.set_major_formatter(_percent())
    axes.set_xlabel("share of the score's sensitivity, and the label's support (%)")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [Patch(color=OTHER, label="share of the sensitivity")]
    if data["suspect"].any():
        handles.append(Patch(color=FLAGGED, label="suspected proxy"))
    if data["declared"].any():
        handles.append(Patch(color=PROXY, label="declared proxy"))
    if has_evidence:
        handles += [Line2D([], [], color="#333333", marker="D", markersize=4, linewidth=2.2,
                           label="label's support, up to its upper bound"),
                    Line2D([], [], color=FLAGGED, linestyle="--",
                           label="suspected over this share")]
    _legend(axes, handles)


def _off_rates(axes: Axes, plan: ChartPlan) -> None:
    data = plan.data
    y = np.arange(len(data))
    colors = [FLAGGED if r.warns else PROXY if r.over else OTHER for r in data.itertuples()]
    axes.barh(y, data["off_rate"], color=colors, height=0.6)
    limit = plan.options["max_off_rate"]
    axes.axvline(limit, color=FLAGGED, linewidth=1.4, linestyle="--")
    for i, r in enumerate(data.itertuples()):
        error = (f"{r.material_error:.1%}" if np.isfinite(r.material_error)
                 else "inf")  # the score does not vary
        axes.text(r.off_rate, i, f" {r.off_rate:.1%} off; error {error}"
                  + (", material" if r.material else ""), va="center", fontsize=8)
    _feature_axis(axes, y, data["feature"])
    top = float(max(data["off_rate"].max(), limit))
    axes.set_xlim(0, max(top * 1.7, 0.02))
    axes.xaxis.set_major_formatter(_percent(decimals=None))
    axes.set_xlabel("rows where gradient x step misses the score's change (%)")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [Patch(color=OTHER, label="within the limit")]
    if (data["over"] & ~data["material"]).any():
        handles.append(Patch(color=PROXY, label="over the limit, error not material"))
    if data["warns"].any():
        handles.append(Patch(color=FLAGGED, label=f"over the limit, error material: "
                                                  f"{plan.options['verdict']}"))
    handles.append(Line2D([], [], color=FLAGGED, linestyle="--",
                          label=f"limit (linearity.max_off_rate): {limit:.0%}"))
    _legend(axes, handles)


def _layer_ratios(axes: Axes, plan: ChartPlan) -> None:
    data = plan.data
    y = np.arange(len(data))
    limit = plan.options["max_ratio"]
    # Bars from 1 (the last layer's median) to each layer's ratio: right where the gradient
    # grows towards the input, left where it shrinks. A ratio of 0 (a dead layer) has no bar.
    ratio = data["ratio"].to_numpy(dtype=float)
    drawn = ratio > 0
    beyond = drawn & ((ratio > limit) | (ratio < 1 / limit))
    colors = [OLD if layer == INPUT_LAYER else FLAGGED if out else OTHER
              for layer, out in zip(data["layer"], beyond, strict=True)]
    axes.barh(y[drawn], ratio[drawn] - 1, left=1, color=np.array(colors)[drawn], height=0.6)
    spread = drawn & (data["ratio_p05"] > 0).to_numpy()
    axes.hlines(y[spread], data["ratio_p05"][spread], data["ratio_p95"][spread],
                color="#333333", linewidth=1.0)
    axes.set_xscale("log")
    for side in (limit, 1 / limit):
        axes.axvline(side, color=FLAGGED, linewidth=1.4, linestyle="--")
    axes.axvline(1, color="#555555", linewidth=0.8)
    positive = np.concatenate([ratio[drawn], data["ratio_p95"][spread], [limit]])
    low = min(float(np.min(np.concatenate([ratio[drawn], data["ratio_p05"][spread]]))),
              1 / limit)
    axes.set_xlim(low / 4, float(positive.max()) * 20)
    for i, r in enumerate(data.itertuples()):
        text = (" 0 (dead: no gradient)" if r.ratio <= 0 else f" {r.ratio:,.0f}x"
                if r.ratio >= 1000 else f" {r.ratio:.3g}x")
        axes.text(max(r.ratio, r.ratio_p95, 1.0) if r.ratio > 0 else low / 4, i,
                  text + (" (judged)" if r.judged else ""), va="center", fontsize=8)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    # Plain numbers: with math text off, the default log labels would show as raw TeX.
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    _feature_axis(axes, y, [f"{r.layer} ({r.kind})" if r.layer != INPUT_LAYER else r.layer
                            for r in data.itertuples()])
    axes.set_xlabel("median norm of d score / d activations, over the last layer's "
                    "(log scale; 1 = the last layer)")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [Patch(color=OTHER, label="layer within the limits")]
    if beyond[data["layer"].to_numpy() != INPUT_LAYER].any():
        handles.append(Patch(color=FLAGGED, label="layer beyond the limits"))
    if (data["layer"] == INPUT_LAYER).any():
        handles.append(Patch(color=OLD, label="the input (not judged)"))
    handles += [Line2D([], [], color="#333333", label="rows' 5th to 95th percentile"),
                Line2D([], [], color=FLAGGED, linestyle="--",
                       label=f"limits (layer_health.max_ratio): 1/{limit:g} and {limit:g}")]
    _legend(axes, handles)


def _levels(axes: Axes, plan: ChartPlan) -> None:
    data = plan.data
    y = np.arange(len(data))
    axes.barh(y, data["mean_change"], color=OTHER, height=0.6)
    axes.axvline(0, color="#555555", linewidth=0.8)
    reach = float(data["mean_change"].abs().max()) or 1.0
    for i, value in enumerate(data["mean_change"]):
        axes.text(value, i, f" {value:+.4g}" if value >= 0 else f"{value:+.4g} ",
                  va="center", ha="left" if value >= 0 else "right", fontsize=8)
    _feature_axis(axes, y, data["to_level"])
    axes.set_xlim(-reach * 1.4 if (data["mean_change"] < 0).any() else -reach * 0.05,
                  reach * 1.4 if (data["mean_change"] > 0).any() else reach * 0.05)
    axes.set_xlabel("mean change of the score when every row is switched to the level "
                    "(score units)")


def _table(axes: Axes, plan: ChartPlan) -> None:
    data = plan.data
    label, value = plan.options["label"], plan.options["value"]
    y = np.arange(len(data))
    axes.barh(y, data[value], color=OTHER, height=0.7)
    _feature_axis(axes, y, data[label].astype(str))
    axes.axvline(0, color="#555555", linewidth=0.8)
    axes.set_xlabel(value)


def _feature_axis(axes: Axes, y: np.ndarray, names: Any) -> None:
    """Names down the y axis, the first row on top."""
    # Control characters in a name are drawn as their escapes, as every report shows them.
    axes.set_yticks(y, [_short(visible(str(n))) for n in names])
    axes.set_ylim(len(y) - 0.5, -0.5)


def _short(name: str) -> str:
    return name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 1] + "…"


def _legend(axes: Axes, handles: Sequence[Artist] | None) -> None:
    """The legend under the plot, where it hides no bar."""
    if handles is None:
        handles, _ = axes.get_legend_handles_labels()
    figure = axes.get_figure()
    if figure is not None:
        figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8,
                      frameon=False)


def _percent(decimals: int | None = 0) -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(1.0, decimals=decimals)


def _wrap(title: str, width: int = 80) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(title, width)) or title


def _proxy_map(axes: Axes, plan: ChartPlan) -> None:
    data = plan.data
    max_association = float(plan.options["max_association"])
    max_share = float(plan.options["max_share"])
    for r in data.itertuples():
        color = FLAGGED if r.flagged else PROXY if (r.possible or r.allowed) else OTHER
        axes.errorbar([r.association], [r.share],
                      xerr=[[r.association - r.association_low],
                            [r.association_high - r.association]],
                      yerr=[[max(r.share - r.share_low, 0.0)],
                            [max(r.share_high - r.share, 0.0)]],
                      fmt="D" if r.candidate_kind == "combination" else "o", color=color,
                      markersize=5, elinewidth=1, capsize=2)
        if r.flagged or r.possible or r.allowed or r.candidate_kind == "combination" or (
                r.association > max_association or r.share > max_share):
            right = r.association > 0.75  # the name to the point's left, inside the axes
            axes.annotate(_short(visible(str(r.candidate))), (r.association, r.share),
                          xytext=(-4 if right else 4, 4), textcoords="offset points",
                          fontsize=7, ha="right" if right else "left")
    axes.axvline(max_association, color=FLAGGED, linestyle="--", linewidth=1.2)
    axes.axhline(max_share, color=FLAGGED, linestyle="--", linewidth=1.2)
    axes.set_xlim(0, 1.02)
    top = float(np.nanmax(data[["share_high", "share"]].to_numpy(dtype=float)))
    axes.set_ylim(0, max(top, max_share) * 1.15 + 0.01)
    axes.yaxis.set_major_formatter(_percent())
    axes.set_xlabel("association with the protected column (canonical correlation)")
    axes.set_ylabel("share of the score's sensitivity (%)")
    from matplotlib.lines import Line2D

    handles: list[Any] = [
        Line2D([], [], color=OTHER, marker="o", linestyle="", label="input or group"),
        Line2D([], [], color=OTHER, marker="D", linestyle="",
               label="best linear combination of inputs"),
        Line2D([], [], color=FLAGGED, linestyle="--", label="limits")]
    if data["flagged"].any():
        handles.append(Line2D([], [], color=FLAGGED, marker="o", linestyle="", label="proxy"))
    if (data["possible"] | data["allowed"]).any():
        handles.append(Line2D([], [], color=PROXY, marker="o", linestyle="",
                              label="possible (not beyond noise) or allowed"))
    _legend(axes, handles)


_DRAW = {"shares": _shares, "distribution": _distribution, "compare": _compare,
         "table": _table, "histogram": _histogram, "rates": _rates, "evidence": _evidence,
         "off_rates": _off_rates, "layer_ratios": _layer_ratios, "levels": _levels,
         "proxy_map": _proxy_map}
