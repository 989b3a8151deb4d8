"""``audit.proxies``: declared proxies must stay under their share and rank limits."""

from __future__ import annotations

import math

from ..config import AuditSettings, ProxyLimit
from .base import Check, CheckResult, Gate, Ranking


class ProxyLimits(Check):
    name = "proxy_limits"
    config_key = "proxies"

    def __init__(self, proxies: tuple[ProxyLimit, ...]):
        self.proxies = {p.feature: p for p in proxies}

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> ProxyLimits:
        # Built even with no proxies declared: its note names the strongest drivers.
        return cls(settings.proxies)

    def finish(self, ranking: Ranking) -> CheckResult:
        result = CheckResult(self.name)
        table = ranking.table
        multi = len(ranking.outputs) > 1
        for row in table.itertuples():
            proxy = self.proxies.get(row.feature)
            if proxy is None:
                continue
            share, rank = float(row.share), int(row.rank)
            over_share = proxy.max_share is not None and share > proxy.max_share
            # A feature the score does not respond to is never "among the top N", whatever
            # its tied rank says.
            over_rank = proxy.max_rank is not None and rank <= proxy.max_rank and share > 0
            broken = []
            if over_share:
                broken.append(f"share <= {proxy.max_share:.0%}")
            if over_rank:
                broken.append(f"not among the top {proxy.max_rank}")
            limit = " and ".join(broken) or _limits(proxy)
            result.gates.append(Gate(
                check=self.name, subject=row.feature, output=row.output,
                passed=not broken, limit=limit,
                details={"share": share, "rank": rank, "max_share": proxy.max_share,
                         "max_rank": proxy.max_rank}))
            if broken and row.feature not in ranking.features:  # a group (audit.groups)
                where = f" for output '{row.output}'" if multi else ""
                members = table[(table["output"] == row.output)
                                & (table["group"] == row.feature)
                                & table["feature"].isin(ranking.features)]
                parts = ", ".join(f"{m.feature} {m.share:.1%}" for m in members.itertuples())
                result.findings.append(
                    f"**{row.feature}** is a declared proxy group and its features together "
                    f"drive {share:.1%} of the score's sensitivity{where} ({parts}; rank {rank} "
                    f"counting the group as one feature), over its limit ({limit}). Split "
                    "across correlated columns, a proxy can stay under a per-column limit "
                    "while the model leans on it as a whole: remove the correlation from the "
                    "training data and retrain."
                    + (f" Why it must not matter: {proxy.reason}." if proxy.reason else ""))
            elif broken:
                where = f" for output '{row.output}'" if multi else ""
                result.findings.append(
                    f"**{row.feature}** is a declared proxy and drives {share:.1%} of the "
                    f"score's sensitivity{where} (rank {rank} of {len(ranking.features)}), over "
                    f"its limit ({limit}). " + _typical_effect(row) + " The model leans on a "
                    "feature that should not decide the score: "
                    "it has likely learned it as a stand-in for what actually matters. Remove "
                    "the correlation from the training data (resample, or add it as a control) "
                    "and retrain, then run this audit again."
                    + (f" Why it must not matter: {proxy.reason}." if proxy.reason else ""))
        if not result.failed:
            features = table[table["feature"].isin(ranking.features)]  # not audit.groups'
            for output, group in features.groupby("output", sort=False):
                top = group.sort_values("rank").head(3)
                names = ", ".join(f"{r.feature} ({r.share:.1%})" for r in top.itertuples())
                where = f"Output '{output}': " if multi else ""
                result.notes.append(f"{where}No declared proxy is over its limit. The strongest "
                                    f"drivers are {names}.")
        return result


def _typical_effect(row) -> str:
    """The proxy's typical effect on the score, in the units of the audit's method."""
    if hasattr(row, "mean_abs_attribution"):  # an attribution method: score units already
        return (f"On average it accounts for {_num(row.mean_abs_attribution)} of a row's "
                "score change from the baseline.")
    return (f"A one-standard-deviation change in {row.feature} ({_num(row.std)}) moves the "
            f"score by {_num(row.scaled_sensitivity)} on average.")


def _limits(proxy: ProxyLimit) -> str:
    parts = []
    if proxy.max_share is not None:
        parts.append(f"share <= {proxy.max_share:.0%}")
    if proxy.max_rank is not None:
        parts.append(f"not among the top {proxy.max_rank}")
    return " and ".join(parts)


def _num(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    return f"{value:.3g}"
