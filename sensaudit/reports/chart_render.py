"""Draw a :class:`~sensaudit.reports.charts.ChartPlan` with matplotlib (the ``charts``
extra), through its object API only: no pyplot, no backend switch, nothing global touched in a
caller's process beyond a temporary rc context.

Every number drawn is read from ``plan.data``; nothing is computed here.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np

from sensaudit.reports.charts import ChartPlan

if TYPE_CHECKING:
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
        figure = Figure(figsize=(WIDTH_IN, 1.3 + per_row * rows), dpi=DPI,
                        layout="constrained")
        axes = figure.add_subplot()
        _DRAW[plan.kind](axes, plan)
        axes.set_title(plan.title, loc="left", fontsize=10, fontweight="bold")
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
    _feature_axis(axes, y, data["feature"])
    axes.set_xlabel("share of the score's sensitivity")
    axes.set_xlim(0, max(float(data["share"].max()) * 1.18, 0.05))
    axes.xaxis.set_major_formatter(_percent())
    from matplotlib.patches import Patch

    handles = [Patch(color=OTHER, label="feature")]
    if data["proxy"].any():
        handles.append(Patch(color=PROXY, label="declared proxy"))
    if data["flagged"].any():
        handles.append(Patch(color=FLAGGED, label="flagged (over its limit)"))
    axes.legend(handles=handles, loc="lower right", fontsize=8, frameon=False)


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
    axes.set_xlabel("contribution to the score per row (gradient x std); diamond: mean")


def _compare(axes: Axes, plan: ChartPlan) -> None:
    data = plan.data
    y = np.arange(len(data))
    height = 0.38
    for column, offset, color, label in (("share_old", -height / 2, OLD, "old"),
                                         ("share_new", height / 2, OTHER, "new")):
        error = None
        if f"{column}_low" in data:
            # Clipped at 0: a replicate's quantile can sit a rounding error past the share.
            error = np.vstack([(data[column] - data[f"{column}_low"]).clip(lower=0),
                               (data[f"{column}_high"] - data[column]).clip(lower=0)])
        axes.barh(y + offset, data[column], height=height, color=color, label=label,
                  xerr=error, error_kw={"elinewidth": 0.9, "capsize": 2, "ecolor": "#333333"})
    # The change is written past the longer bar and its interval.
    ends = data[[c for c in ("share_old", "share_new", "share_old_high", "share_new_high")
                 if c in data]].max(axis=1)
    for i, (r, end) in enumerate(zip(data.itertuples(), ends, strict=True)):
        status = getattr(r, "status", "common")
        mark = " *" if r.significant else ""
        text = f"  {r.delta_share:+.1%}{mark}" if status == "common" else f"  {status}"
        axes.text(end, i, text, va="center", fontsize=8)
    labels = [f"{f}  ({'flagged' if n else 'cleared'})" if o != n else f
              for f, o, n in zip(data["feature"], data["flagged_old"], data["flagged_new"],
                                 strict=True)]
    _feature_axis(axes, y, labels)
    top = float(np.nanmax(data[[c for c in data.columns if c.startswith("share_")]].to_numpy()))
    axes.set_xlim(0, max(top * 1.25, 0.05))
    axes.xaxis.set_major_formatter(_percent())
    axes.set_xlabel("share of the score's sensitivity")
    axes.legend(loc="lower right", fontsize=8, frameon=False)


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
    axes.set_yticks(y, [_short(str(n)) for n in names])
    axes.set_ylim(len(y) - 0.5, -0.5)


def _short(name: str) -> str:
    return name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 1] + "…"


def _percent() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(1.0, decimals=0)


_DRAW = {"shares": _shares, "distribution": _distribution, "compare": _compare,
         "table": _table}
