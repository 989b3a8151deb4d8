"""CSV tables: sensitivity.csv and examples.csv for an audit, comparison.csv for a compare.

Every text cell and header goes through text_safety's csv escaping: a feature named
"=HYPERLINK(...)" would otherwise run as a formula when the file is opened in a spreadsheet.
Such a name then reads back with a leading "'" (numbers, negative ones too, are never
touched); summary.json and the Parquet files keep names exactly.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from sensaudit.core.text_safety import csv_frame, csv_table
from sensaudit.reports.base import ReportWriter, nulls_as_text
from sensaudit.reports.staging import StagedReport
from sensaudit.results.audit_result import AuditResult
from sensaudit.results.comparison import ComparisonResult


class CsvReport(ReportWriter):
    format = "csv"

    def __init__(self, out: StagedReport):
        super().__init__(out)
        self._examples: pa_csv.CSVWriter | None = None
        self._schema: pa.Schema | None = None
        out.on_close(self._close)

    def examples(self, rows: pa.Table | pd.DataFrame) -> None:
        """Stream one chunk into examples.csv with Arrow's C++ CSV writer (pandas' to_csv
        formats every float in Python and took half of a million-row audit's time)."""

        def write() -> None:
            table = (rows if isinstance(rows, pa.Table)
                     else pa.Table.from_pandas(rows, preserve_index=False, schema=self._schema))
            if self._examples is None:
                table = table.cast(nulls_as_text(table.schema))
                self._schema = table.schema
                self._examples = pa_csv.CSVWriter(
                    str(self.out.path("examples.csv")), csv_table(table.slice(0, 0)).schema,
                    write_options=pa_csv.WriteOptions(quoting_style="needed"))
            elif table.schema != self._schema:
                table = table.cast(self._schema)
            self._examples.write_table(csv_table(table))

        self.out.guarded(write)

    def _close(self) -> None:
        if self._examples is not None:
            self._examples.close()
            self._examples = None

    def audit(self, result: AuditResult) -> None:
        self._table("sensitivity.csv", result.table)
        for check in result.checks:  # each check's own tables (robustness.csv, ...)
            for name, frame in check.tables.items():
                self._table(name, frame)
        if self._schema is None and self.writes_examples:  # no rows streamed: the header
            self.examples(pd.DataFrame(columns=["id", "output", "score"]))
        self._close()

    def _table(self, name: str, frame: pd.DataFrame) -> None:
        self.out.guarded(lambda: csv_frame(frame).to_csv(self.out.path(name), index=False,
                                                         float_format="%.8g"))

    def comparison(self, result: ComparisonResult) -> None:
        self._table("comparison.csv", result.table)
