"""PNG charts (the ``charts`` extra, matplotlib): feature shares, the per-row spread of the
top features' scaled gradients, one chart per check (its limit drawn), and compare's change of
each share with its interval. report.md and comparison.md link them when this format is asked
for."""

from __future__ import annotations

from sensaudit.reports.base import ReportWriter
from sensaudit.reports.charts import ChartPlan, audit_plans, comparison_plans
from sensaudit.results.audit_result import AuditResult
from sensaudit.results.comparison import ComparisonResult


class PngReport(ReportWriter):
    format = "png"
    requires = ("matplotlib",)
    extra = "charts"

    def audit(self, result: AuditResult) -> None:
        self._write(audit_plans(result))

    def comparison(self, result: ComparisonResult) -> None:
        self._write(comparison_plans(result))

    def _write(self, plans: list[ChartPlan]) -> None:
        from sensaudit.reports.chart_render import png_bytes

        for plan in plans:
            self._save(plan.name, png_bytes(plan))

    def _save(self, name: str, data: bytes) -> None:
        path = self.out.path(name)

        def write() -> None:
            path.write_bytes(data)

        self.out.guarded(write)
