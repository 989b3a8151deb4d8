"""Parquet tables, for per-row outputs too large for CSV: examples.parquet (streamed, one row
group per chunk) and sensitivity.parquet for an audit, comparison.parquet for a compare.

Same columns as the CSV files, typed and compressed, so numbers read back exactly and with
their types. With ``report.examples: none`` no examples.parquet is written.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from sensaudit.reports.base import ReportWriter, nulls_as_text
from sensaudit.reports.staging import StagedReport
from sensaudit.results.audit_result import AuditResult
from sensaudit.results.comparison import ComparisonResult


class ParquetReport(ReportWriter):
    format = "parquet"

    def __init__(self, out: StagedReport):
        super().__init__(out)
        self._examples: pq.ParquetWriter | None = None
        out.on_close(self._close)

    def examples(self, rows: pa.Table) -> None:
        def write() -> None:
            table = rows
            if self._examples is None:
                self._examples = pq.ParquetWriter(str(self.out.path("examples.parquet")),
                                                  nulls_as_text(table.schema))
            if table.schema != self._examples.schema:
                table = table.cast(self._examples.schema)
            self._examples.write_table(table)

        self.out.guarded(write)

    def _close(self) -> None:
        if self._examples is not None:
            self._examples.close()
            self._examples = None

    def audit(self, result: AuditResult) -> None:
        self._close()
        self.out.guarded(lambda: pq.write_table(
            pa.Table.from_pandas(result.table, preserve_index=False),
            str(self.out.path("sensitivity.parquet"))))

    def comparison(self, result: ComparisonResult) -> None:
        self.out.guarded(lambda: pq.write_table(
            pa.Table.from_pandas(result.table, preserve_index=False),
            str(self.out.path("comparison.parquet"))))
