"""``audit.proxies``: declared proxies must stay under their share and rank limits.

A share is gradient sensitivity, and a gradient can be blind to a feature the score depends on
(constant in the data, ``detach()``, a step): each proxy is first probed with a finite step
(:mod:`.proxy_probe`), and a gate the gradient cannot judge fails, or warns, saying why.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from sensaudit.checks.base import Check, CheckResult, Gate, Notice, Ranking
from sensaudit.checks.proxy_probe import SAMPLE_ROWS, ProbeFigures, probe
from sensaudit.core.errors import ConfigError, did_you_mean
from sensaudit.methods.base import Attributions
from sensaudit.settings.checks import FeatureGroup
from sensaudit.settings.sections import AuditSettings, ProxyLimit
from sensaudit.stats.accumulators import finite_rows
from sensaudit.stats.row_sample import RowSample


class ProxyLimits(Check):
    name = "proxy_limits"
    config_key = "proxies"

    def __init__(self, proxies: tuple[ProxyLimit, ...], groups: tuple[FeatureGroup, ...] = ()):
        self.proxies = {p.feature: p for p in proxies}
        self.members = {g.name: list(g.columns) for g in groups}
        # The rows the probe moves: the same bottom-k sample of row numbers as the charts'
        # (mergeable, the same rows whatever the chunks or workers), of the model's inputs.
        self.sample = RowSample(SAMPLE_ROWS)

    @classmethod
    def check_names(cls, settings: AuditSettings, features: tuple[str, ...]) -> None:
        """Every declared proxy is an audited feature (or group), declared once: a typo must
        not disable a gate."""
        seen: set[str] = set()
        groups = tuple(group.name for group in settings.groups)  # a limit may name a group
        for i, proxy in enumerate(settings.proxies):
            if proxy.feature in seen:
                raise ConfigError(f"audit.proxies[{i}].feature '{proxy.feature}' is declared "
                                  "twice")
            seen.add(proxy.feature)
            if proxy.feature not in features and proxy.feature not in groups:
                named = (*features, *groups)
                raise ConfigError(f"audit.proxies[{i}].feature '{proxy.feature}' "
                                  f"is not an audited feature{' or group' if groups else ''}"
                                  f"{did_you_mean(proxy.feature, named)}"
                                  f" (features: {', '.join(features)}"
                                  f"{'; groups: ' + ', '.join(groups) if groups else ''})")

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> ProxyLimits:
        # Built even with no proxies declared: its note names the strongest drivers.
        return cls(settings.proxies, settings.groups)

    def update(self, rows: np.ndarray, x: torch.Tensor, attributions: Attributions,
               labels: np.ndarray | None) -> None:
        if not self.proxies:  # rows are kept only when there is a gate to judge
            return
        finite = finite_rows(attributions.scores, attributions.values).cpu().numpy()
        numbers = np.asarray(rows, dtype=np.int64)[finite]
        wanted = self.sample.wanted(numbers)
        take = torch.from_numpy(np.flatnonzero(finite)[wanted]).to(x.device)
        # float64 holds every float16, bfloat16 and float32 input exactly: _probe casts back.
        self.sample.update(numbers[wanted], x.detach()[take].cpu().double().numpy(),
                           offered=len(numbers))

    def merge(self, other: Check) -> None:
        if not isinstance(other, ProxyLimits):
            raise TypeError(f"cannot merge a {type(other).__name__} into ProxyLimits")
        self.sample.merge(other.sample)

    def finish(self, ranking: Ranking) -> CheckResult:
        result = CheckResult(self.name)
        table = ranking.table
        multi = len(ranking.outputs) > 1
        probed = self._probe(ranking)
        for row in table.itertuples():
            proxy = self.proxies.get(row.feature)
            if proxy is None:
                continue
            seen = [probed[(row.output, m)] for m in self.members.get(row.feature, [row.feature])
                    if (row.output, m) in probed]
            settled, caveat = _unseen(result, row, proxy, seen, multi)
            if settled:
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
            limit = (" and ".join(broken) or _limits(proxy)) + caveat
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
                declared = [p for p in self.proxies
                            if p in set(table.loc[table["output"] == output, "feature"])]
                one = len(declared) == 1
                state = (f"the declared prox{'y' if one else 'ies'} {', '.join(declared)} "
                         f"{'is' if one else 'are'} within {'its limit' if one else 'their limits'}"
                         if declared else "no proxy declared (audit.proxies)")
                result.notes.append(f"{where}Proxy limits: {state}. The strongest drivers are "
                                    f"{names}.")
        return result


    def _probe(self, ranking: Ranking) -> dict[tuple[str, str], ProbeFigures]:
        """Each declared proxy feature (a group's members), probed per output."""
        values = self.sample.values
        if ranking.model is None or values is None or not len(values):
            return {}
        x = torch.from_numpy(values).to(ranking.dtype or torch.float64)
        features = ranking.features
        names = [m for p in self.proxies for m in self.members.get(p, [p]) if m in features]
        if not names:
            return {}
        table = ranking.table[ranking.table["feature"].isin(features)]
        scaled = torch.tensor(
            [[float(v) for v in table[table["output"] == o].set_index("feature")
              .loc[features, "scaled_sensitivity"]] for o in ranking.outputs],
            dtype=torch.float64)
        first = table[table["output"] == ranking.outputs[0]].set_index("feature")
        std = torch.tensor([float(first.loc[f, "std"]) for f in features], dtype=torch.float64)
        found = probe(ranking.model, x.to(ranking.device or x.device),
                      {n: features.index(n) for n in dict.fromkeys(names)}, std, scaled,
                      ranking.outputs)
        return {(f.output, f.feature): f for f in found}


def _unseen(result: CheckResult, row: Any, proxy: ProxyLimit, seen: list[ProbeFigures],
            multi: bool) -> tuple[bool, str]:
    """A gate the gradient cannot judge: a failed gate (the score moves where the gradient
    sees nothing) or a warning (constant in the data). Returns whether the gate is settled
    here, and else a caveat for its limit text."""
    where = f" for output '{row.output}'" if multi else ""
    blind = [f for f in seen if f.blind]
    if blind:
        worst = max(blind, key=lambda f: f.probe_share)
        why = (f"{worst.feature} is constant in the data" if worst.constant
               else f"the gradient does not see {worst.feature}")
        limit = f"{_limits(proxy)}; cannot judge: {why}"
        result.gates.append(Gate(
            check="proxy_limits", subject=row.feature, output=row.output, passed=False,
            limit=limit,
            details={"share": float(row.share), "rank": int(row.rank),
                     "probe_share": worst.probe_share, "score_change": worst.moved,
                     "gradient_predicts": worst.predicted, "gradient_misses": worst.missed,
                     "max_share": proxy.max_share,
                     "max_rank": proxy.max_rank}))
        member = (f" (through its member {worst.feature})" if worst.feature != row.feature
                  else "")
        if worst.constant:
            how = (f"{worst.feature} is constant in the audited rows, so no share measured on "
                   f"them can show its effect, yet moving it by {worst.step:.4g} (10% of its "
                   "value, at least 1.0: it has no spread to scale by) moves the score by "
                   f"{_num(worst.moved)} on average over {worst.rows} sampled rows")
            fix = ("Audit rows where it varies, or remove it from the model's inputs.")
        else:
            how = (f"moving {worst.feature} by {worst.step_std:g} std ({worst.step:.4g}) moves "
                   f"the score by {_num(worst.moved)} on average over {worst.rows} sampled "
                   f"rows, while its gradient predicts {_num(worst.predicted)} and misses "
                   f"{_num(worst.missed)}: the gradient cannot see it (the model likely reaches "
                   "it through detach(), a comparison, rounding or another step)")
            fix = ("Judge it with a method that does not rely on the gradient's slope, or "
                   "make the model's use of it differentiable, and audit again.")
        result.findings.append(
            f"**{row.feature}** is a declared proxy whose gate cannot be judged{where}{member}: "
            f"{how}. Measured by that step, what the gradient misses would hold about "
            f"{worst.probe_share:.1%} of the score's sensitivity, against the "
            f"{float(row.share):.1%} its gradient share shows "
            f"and its limit ({_limits(proxy)}). {fix}"
            + (f" Why it must not matter: {proxy.reason}." if proxy.reason else ""))
        return True, ""
    constant = [f for f in seen if f.constant]
    if constant:
        # Still a gate (the score did not move under the probe's step), but one this data
        # cannot judge: say so rather than let it read "passed at 0%".
        first = constant[0]
        result.warnings.append(Notice(
            check="proxy_limits", subject=row.feature, output=row.output,
            details={"not_judged": "constant in the audited rows",
                     "probe_step": first.step, "score_change": first.moved}))
        result.findings.append(
            f"**{row.feature}**: its proxy gate cannot be judged from this data{where}: "
            f"{first.feature} is constant in the audited rows, so its share is 0 whatever the "
            f"model does with it. Moving it by {first.step:.4g} (10% of its value, at least "
            f"1.0) moved the score by {_num(first.moved)} on average over {first.rows} sampled "
            "rows; audit rows where it varies to judge the gate.")
        return False, f"; not judged: {first.feature} is constant in the audited rows"
    return False, ""


def _typical_effect(row: Any) -> str:
    """The proxy's typical effect on the score, in the units of the audit's method (``row``:
    one of the ranking table's itertuples())."""
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
