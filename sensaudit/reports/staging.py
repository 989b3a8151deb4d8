"""The only module that writes files: CSV, markdown and JSON reports, written atomically.

A CI step may read whatever sits in the report folder, so a half-written report must never be
there: every file is written into a staging folder beside the target and moved into place only
when the whole audit succeeded. A failed run leaves earlier reports untouched.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from .. import __version__
from ..analysis import AuditResult
from ..compare import ComparisonResult, gate_change
from ..errors import ReportError


class StagedReport:
    """Write report files into a staging folder; ``commit()`` moves them into ``target``.

    Use as a context manager: leaving the block without ``commit()`` (an error) removes the
    staging folder and leaves ``target`` as it was.
    """

    def __init__(self, target: Path, formats: Sequence[str]):
        self.target = Path(target)
        self.formats = tuple(formats)
        self.staging: Path | None = None
        self._examples: pa_csv.CSVWriter | None = None
        self._examples_schema: pa.Schema | None = None

    def __enter__(self) -> StagedReport:
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            # Same parent, same filesystem: the final moves are atomic renames.
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.staging-",
                                                 dir=self.target.parent))
        except OSError as exc:
            raise ReportError(f"{self.target}: cannot create report folder "
                              f"(report.dir): {exc.strerror or exc}") from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close_examples()
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None

    def _path(self, name: str) -> Path:
        if self.staging is None:
            raise RuntimeError("StagedReport used outside its `with` block")
        return self.staging / name

    def append_examples(self, frame: pd.DataFrame) -> None:
        """Stream one chunk of per-example drivers into examples.csv.

        Arrow's C++ CSV writer: pandas' to_csv formats every float in Python and took half
        of a million-row audit's time.
        """
        if "csv" not in self.formats:
            return

        def write() -> None:
            table = pa.Table.from_pandas(frame, preserve_index=False,
                                         schema=self._examples_schema)
            if self._examples is None:
                # A first chunk whose ids (or labels) are all missing types the column as
                # null, and the next chunk's values could not be cast to that: use string.
                nullable = pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type)
                                      else f for f in table.schema])
                table = table.cast(nullable)
                self._examples_schema = table.schema
                self._examples = pa_csv.CSVWriter(
                    str(self._path("examples.csv")), table.schema,
                    write_options=pa_csv.WriteOptions(quoting_style="needed"))
            self._examples.write_table(table)

        _guarded(self.target, write)

    def _close_examples(self) -> None:
        if self._examples is not None:
            self._examples.close()
            self._examples = None

    def write_audit(self, result: AuditResult) -> None:
        """Write sensitivity.csv, summary.json and report.md as the formats ask."""
        if "csv" in self.formats:
            _guarded(self.target, lambda: result.table.to_csv(
                self._path("sensitivity.csv"), index=False, float_format="%.8g"))
            if self._examples_schema is None:
                self.append_examples(pd.DataFrame(columns=["id", "output", "score"]))
            self._close_examples()
        if "json" in self.formats:
            self.write_text("summary.json", json.dumps(_json_safe(audit_summary(result)),
                                                       indent=2, allow_nan=False) + "\n")
        if "markdown" in self.formats:
            self.write_text("report.md", audit_markdown(result))

    def write_comparison(self, result: ComparisonResult) -> None:
        """Write comparison.csv, comparison.json and comparison.md as the formats ask."""
        if "csv" in self.formats:
            _guarded(self.target, lambda: result.table.to_csv(
                self._path("comparison.csv"), index=False, float_format="%.8g"))
        if "json" in self.formats:
            self.write_text("comparison.json", json.dumps(comparison_summary(result), indent=2,
                                                          allow_nan=False) + "\n")
        if "markdown" in self.formats:
            self.write_text("comparison.md", comparison_markdown(result))

    def write_text(self, name: str, text: str) -> None:
        _guarded(self.target, lambda: self._path(name).write_text(text, encoding="utf-8"))

    def commit(self) -> list[Path]:
        """Move every staged file into the target folder; return their final paths."""
        if self.staging is None:
            raise RuntimeError("StagedReport.commit() outside its `with` block")
        staged_files = sorted(p for p in self.staging.iterdir() if p.is_file())
        # A move failing halfway (disk, permissions) must not leave a mix of new and old
        # reports. Each file being replaced is kept (hard link, else copy) until every move
        # succeeded, and put back if one fails; the target never lacks a file meanwhile.
        previous = self.staging / ".previous"
        moved: list[tuple[Path, Path | None]] = []  # (final path, its kept previous version)
        try:
            self.target.mkdir(parents=True, exist_ok=True)
            previous.mkdir()
            for staged in staged_files:
                final = self.target / staged.name
                kept = None
                if final.is_file():
                    kept = previous / staged.name
                    _keep(final, kept)
                os.replace(staged, final)
                moved.append((final, kept))
        except OSError as exc:
            _roll_back(moved)
            raise ReportError(f"{self.target}: cannot write reports (report.dir): "
                              f"{exc.strerror or exc}") from None
        return [final for final, _ in moved]


def _keep(final: Path, kept: Path) -> None:
    try:
        os.link(final, kept)
    except OSError:  # a filesystem without hard links
        shutil.copy2(final, kept)


def _roll_back(moved: list[tuple[Path, Path | None]]) -> None:
    """Best effort: put the previous reports back after a failed commit."""
    for final, kept in reversed(moved):
        try:
            if kept is not None:
                os.replace(kept, final)
            else:
                final.unlink(missing_ok=True)
        except OSError:
            pass


def _guarded(target: Path, write: Any) -> None:
    try:
        write()
    except OSError as exc:
        raise ReportError(f"{target}: cannot write reports (report.dir): "
                          f"{exc.strerror or exc}") from None


def audit_summary(result: AuditResult) -> dict[str, Any]:
    """The JSON summary CI jobs read: verdict, flags, counts and where the inputs came from."""
    table = result.table
    return {
        "sensaudit_version": __version__,
        "passed": result.passed,
        "flags": [{"feature": f.feature, "output": f.output, "share": _finite(f.share),
                   "rank": f.rank, "max_share": f.max_share, "max_rank": f.max_rank,
                   "limit": f.limit} for f in result.gates.flags],
        "warnings": [{"feature": w.feature, "output": w.output, "share": _finite(w.share),
                      "threshold": w.threshold} for w in result.gates.warnings],
        "rows": result.rows,
        "rows_dropped": result.rows_dropped,
        "nonfinite_gradient_rows": result.nonfinite_rows,
        "nonfinite_gradient_ids": [_plain(i) for i in result.nonfinite_ids],
        "model": {"path": result.model_path, "format": result.model_format},
        "data": {"path": result.data_path},
        "features": result.features,
        "outputs": result.outputs,
        "mean_score": {k: _finite(v) for k, v in result.mean_scores.items()},
        "ranking": {output: group.sort_values("rank")[["feature", "share", "rank"]]
                    .assign(share=lambda g: g["share"].map(_finite)).to_dict("records")
                    for output, group in table.groupby("output", sort=False)},
    }


def audit_markdown(result: AuditResult) -> str:
    """A report fit to paste into a pull request or a CI job summary."""
    verdict = "PASSED" if result.passed else "FAILED"
    lines = [
        f"# sensaudit: {verdict}",
        "",
        f"- Model: `{result.model_path}` ({result.model_format})",
        f"- Data: `{result.data_path}`, {result.rows:,} rows audited"
        + (f", {result.rows_dropped:,} dropped for missing values" if result.rows_dropped else ""),
        f"- Features: {len(result.features)}; outputs: {', '.join(result.outputs)}",
        "",
        "## Findings",
        "",
    ]
    lines += [f"- {text}" for text in result.findings]
    if result.nonfinite_rows:
        ids = ", ".join(str(i) for i in result.nonfinite_ids)
        allowed = "allowed by audit.allow_nonfinite" if result.nonfinite_allowed else (
            "this fails the audit (set audit.allow_nonfinite: true to accept)")
        lines.append(f"- {result.nonfinite_rows:,} rows gave non-finite scores or gradients "
                     f"and were left out of the statistics ({allowed}); first ids: {ids}.")
    lines += ["", "## Feature sensitivity", "",
              "`share` is each feature's part of the total scaled sensitivity (std x mean "
              "|gradient|: the typical score change for a one-standard-deviation change).", ""]
    for output, group in result.table.groupby("output", sort=False):
        if len(result.outputs) > 1:
            lines += [f"### Output `{output}`", ""]
        lines += ["| rank | feature | share | scaled sensitivity | mean gradient | "
                  "mean abs gradient | std | flagged |",
                  "|---:|---|---:|---:|---:|---:|---:|:---:|"]
        for r in group.sort_values("rank").itertuples():
            mark = "**yes**" if r.flagged else ""
            lines.append(f"| {r.rank} | {r.feature} | {r.share:.1%} | {r.scaled_sensitivity:.4g} "
                         f"| {r.mean_gradient:.4g} | {r.mean_abs_gradient:.4g} | {r.std:.4g} "
                         f"| {mark} |")
        lines.append("")
    if result.examples:
        lines += ["## Examples to look at", "",
                  "The audited rows where " + ("the declared proxies move the score most"
                                               if result.proxies
                                               else "one feature moves the score most")
                  + " (contribution: gradient x the feature's std).", "",
                  "| id | output | score | label | top drivers (contribution) |",
                  "|---|---|---:|---:|---|"]
        for ex in result.examples:
            drivers = ", ".join(f"{name} ({contribution:+.3g})"
                                for name, _, contribution in ex.drivers)
            label = "" if ex.label is None else f"{ex.label:g}"
            lines.append(f"| {ex.id} | {ex.output} | {ex.score:.4g} | {label} | {drivers} |")
        lines.append("")
    lines.append(f"<sub>sensaudit {__version__}</sub>")
    return "\n".join(lines) + "\n"


def comparison_summary(result: ComparisonResult) -> dict[str, Any]:
    """comparison.json: the verdict, the overall figures per output, and every feature's."""
    return _json_safe({
        "sensaudit_version": __version__,
        "passed": result.passed,
        "old": {"path": result.old.model_path, "format": result.old.model_format,
                "passed": result.old.passed},
        "new": {"path": result.new.model_path, "format": result.new.model_format,
                "passed": result.new.passed},
        "data": {"path": result.new.data_path, "rows": result.new.rows,
                 "rows_dropped": result.new.rows_dropped},
        "flags_new": [{"feature": f.feature, "output": f.output, "share": f.share,
                       "rank": f.rank, "limit": f.limit} for f in result.new.gates.flags],
        "proxy_increases": result.proxy_increases,
        "settings": result.settings,
        # With one output, its figures sit at the top level too: spearman, kendall_tau, ...
        **(result.overall[result.new.outputs[0]] if len(result.new.outputs) == 1 else {}),
        "outputs": result.overall,
        "features": result.table.to_dict("records"),
        "findings": result.findings,
    })


def comparison_markdown(result: ComparisonResult) -> str:
    """A before/after report for a pull request: table, then plain-words findings."""
    verdict = "PASSED" if result.passed else "FAILED"
    ci = f"{result.settings['confidence']:.0%}"
    has_ci = "delta_share_low" in result.table.columns
    lines = [
        f"# sensaudit compare: {verdict}",
        "",
        f"- Old model: `{result.old.model_path}`",
        f"- New model: `{result.new.model_path}`",
        f"- Data: `{result.new.data_path}`, {result.new.rows:,} rows, the same for both",
        "",
        "## Findings",
        "",
    ]
    lines += [f"- {text}" for text in result.findings]
    lines += ["", "## Before and after", ""]
    if has_ci:
        lines += [f"Intervals: {ci} paired bootstrap over rows "
                  f"({result.settings['bootstrap_samples']} replicates, seed "
                  f"{result.settings['seed']}); a change is marked only when its interval "
                  "excludes zero.", ""]
    for output, group in result.table.groupby("output", sort=False):
        if len(result.new.outputs) > 1:
            lines += [f"### Output `{output}`", ""]
        lines += ["| feature | share old | share new | change | " + (f"{ci} interval | "
                                                                     if has_ci else "")
                  + "rank old -> new | gate |",
                  "|---|---:|---:|---:|" + ("---:|" if has_ci else "") + "---|---|"]
        for r in group.itertuples():
            change = f"{r.delta_share:+.1%}" + (" *" if r.significant else "")
            interval = (f"{r.delta_share_low:+.1%} to {r.delta_share_high:+.1%} | "
                        if has_ci else "")
            gate = gate_change(r.flagged_old, r.flagged_new)
            lines.append(f"| {r.feature} | {r.share_old:.1%} | {r.share_new:.1%} | {change} | "
                         f"{interval}{r.rank_old} -> {r.rank_new} | {gate} |")
        lines.append("")
        overall = result.overall[output]
        rows = overall["least_agreeing_rows"]
        if rows:
            lines += ["Rows where the two models disagree most about what drives the score:",
                      "", "| id | score old | score new | cosine |", "|---|---:|---:|---:|"]
            lines += [f"| {c['id']} | {c['score_old']:.4g} | {c['score_new']:.4g} | "
                      f"{c['cosine']:.3f} |" for c in rows]
            lines.append("")
    lines.append(f"<sub>sensaudit {__version__}</sub>")
    return "\n".join(lines) + "\n"


def _json_safe(value: Any) -> Any:
    """NaN/inf become null and numpy scalars plain numbers, so the JSON is strict."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    value = _plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
