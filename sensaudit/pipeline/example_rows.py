"""The per-row file's rows (examples.csv, examples.parquet): ``report.examples`` as one object
that the report writers hand the audit and the engines ask what to stream.

- ``all``: every row, as the engines produce them, in row order;
- ``auto``: every row of an audit of at most :data:`AUTO_EXAMPLE_ROWS` rows, and beyond that
  the rows report.md lists (with a note saying so): all or none, never a cut-off prefix;
- ``N``: the first N rows;
- ``top``: only the rows report.md lists (``none`` asks for no per-row file at all).

The local engine keeps per-row results only as long as :attr:`ExampleRows.limit` and
:attr:`ExampleRows.all_or_none` ask (:mod:`sensaudit.engines.local`); an engine that streams
every row of its work units as they finish asks :meth:`ExampleRows.streaming` instead, which
holds the rows back until their count is known when it must (a CSV on Ray).
"""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa

from sensaudit.pipeline.examples import records_table
from sensaudit.pipeline.pass_state import ExampleSink
from sensaudit.results.audit_result import AuditResult
from sensaudit.settings.sections import AUTO_EXAMPLE_ROWS


class ExampleRows:
    """Where the per-row rows go (``write``) and which of them (``choice``, report.examples:
    ``all``, ``auto``, ``top`` or a row count)."""

    def __init__(self, write: ExampleSink, choice: str | int):
        self.write = write
        self.choice = choice
        # Read when asked (not bound at import): tests lower it to exercise the limit.
        self.auto_limit = AUTO_EXAMPLE_ROWS

    @property
    def limit(self) -> int | None:
        """At least this many first rows are wanted one by one (None: every row)."""
        if self.choice == "auto":
            return self.auto_limit
        return self.choice if isinstance(self.choice, int) else None

    @property
    def all_or_none(self) -> bool:
        """Every row when the audit has at most :attr:`limit` rows, none beyond."""
        return self.choice == "auto"

    def sink(self) -> ExampleSink | None:
        """What takes the rows as the engine produces them, in row order; None: no row is
        wanted one by one (``top``)."""
        if self.choice in ("all", "auto"):
            return self.write
        if isinstance(self.choice, int):
            return _first_rows(self.write, self.choice)
        return None

    def streaming(self, row_count: int | None) -> Streaming:
        """For an engine that streams every row of its work units as they finish and cannot
        take a row back: ``row_count`` (None: unknown until read) decides up front, or the
        rows are held until it is known."""
        sink = self.sink()
        if sink is None or not self.all_or_none:
            return Streaming(sink)
        limit = self.auto_limit
        if row_count is not None:
            return Streaming(sink if row_count <= limit else None, dropped=row_count > limit)
        return Streaming(sink, held=HeldRows(sink, limit))

    def finish(self, result: AuditResult, *, with_label: bool) -> AuditResult:
        """After the audit: when the rows were not streamed one by one, say so and write the
        rows report.md lists, with all their drivers (``top`` always writes those)."""
        if not result.examples_streamed:
            result = replace(result, notes=[*result.notes, (
                f"The per-row file holds the rows this report lists: the audit has "
                f"{result.rows + result.nonfinite_rows:,} rows, more than report.examples: auto "
                f"writes one by one ({self.auto_limit:,}); report.examples: all writes every "
                "row.")])
        if self.choice == "top" or not result.examples_streamed:
            self.write(records_table(result.examples, with_label=with_label,
                                     per_unit=result.per_unit))
        return result


class Streaming:
    """The rows an engine streams: :attr:`sink` takes them (None: none are wanted), and
    :meth:`done` passes held rows on and says whether every wanted row was written."""

    def __init__(self, sink: ExampleSink | None, *, held: HeldRows | None = None,
                 dropped: bool = False):
        self.held = held
        self.sink = held.take if held is not None else sink
        self.dropped = dropped

    def done(self) -> bool:
        if self.dropped:
            return False
        return self.held is None or self.held.release()


class HeldRows:
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
