"""``audit.dominance_warning``: an undeclared feature holding most of the share is how
unknown proxies show up, so it gets a warning (not a failed gate)."""

from __future__ import annotations

from sensaudit.checks.base import Check, CheckResult, Notice, Ranking
from sensaudit.settings.sections import AuditSettings


class Dominance(Check):
    name = "dominance"
    config_key = "dominance_warning"

    def __init__(self, threshold: float, declared: set[str]):
        self.threshold = threshold
        self.declared = declared

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> Dominance:
        return cls(settings.dominance_warning, {p.feature for p in settings.proxies})

    def finish(self, ranking: Ranking) -> CheckResult:
        result = CheckResult(self.name)
        multi = len(ranking.outputs) > 1
        for row in ranking.table.itertuples():
            # audit.groups' rows are declared by the user: not unknown proxies.
            if (row.feature in self.declared or row.feature not in ranking.features
                    or not row.share > self.threshold):
                continue
            result.warnings.append(Notice(
                check=self.name, subject=row.feature, output=row.output,
                details={"share": float(row.share), "threshold": self.threshold}))
            where = f" for output '{row.output}'" if multi else ""
            result.findings.append(
                f"**{row.feature}** alone holds {row.share:.1%} of the sensitivity{where}, more "
                f"than {self.threshold:.0%}. It is not a declared proxy, but one feature "
                "dominating is how unknown proxies show up: check that it should drive the "
                "score.")
        return result
