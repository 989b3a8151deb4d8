"""The report-writer protocol: one class per format, registered in :mod:`sensaudit.reports`.

A writer renders results generically: it reads the result objects (tables, check results,
findings) and never computes figures of its own, so a new check shows up in every format
without edits here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import pyarrow as pa

    from sensaudit.reports.staging import StagedReport
    from sensaudit.results.audit_result import AuditResult
    from sensaudit.results.comparison import ComparisonResult


def nulls_as_text(schema: pa.Schema) -> pa.Schema:
    """A per-row file's schema with null-typed columns as strings: a first chunk whose ids or
    labels are all missing types such a column as null, and later chunks' values could not be
    cast to it."""
    import pyarrow as pa  # runtime import: this module stays free of it for --help

    return pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f
                      for f in schema])


class ReportWriter:
    """Writes one format's files into a staged report folder.

    ``examples`` is called once per chunk while the audit streams (per-row tables too large to
    keep in memory); ``audit`` and ``comparison`` once at the end. Every method defaults to
    writing nothing, so a format implements only what it has.
    """

    format: ClassVar[str]
    # Packages the format needs beyond sensaudit's own, and the extra that installs them
    # (`pip install 'sensaudit[extra]'`): a config asking for the format without them is
    # refused before any data is read.
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    # The format's options, a frozen dataclass declared with settings.options.option() beside
    # the writer: the config reads them from `report.<format>` and the writer gets them, built
    # with defaults for the keys left out, as ``self.options`` (None when it declares none).
    Options: ClassVar[type | None] = None

    def __init__(self, out: StagedReport):
        self.out = out
        # False when report.examples is none: a format with a per-row file writes none.
        self.writes_examples = True
        self.options: Any = None  # set by open_writers where the format declares Options

    def examples(self, rows: pa.Table) -> None:
        """One chunk of per-example rows (id, output, score, label, drivers)."""

    def audit(self, result: AuditResult) -> None:
        """The finished audit's files."""

    def comparison(self, result: ComparisonResult) -> None:
        """The finished comparison's files."""
