"""Suspected proxies: features the model leans on that nobody declared and the data do not
justify. Three signals, per undeclared feature:

- **reliance vs evidence**: the model's share against the label's support for the feature on
  the audit rows (its share in an additive ridge fit of the label on every standardized
  feature and its square, :mod:`sensaudit.checks.evidence`). Relied on beyond even the upper
  end of its support by ``min_gap`` is the strongest sign of a proxy: it helped in training
  and does not help here.
- **misscored-row contrast**: the feature's share computed on the misscored rows alone
  (``audit.misscored``) against its share on the rest, with a Poisson bootstrap interval. A
  proxy takes a larger part of the rows it gets wrong.
- **dominance**: it holds more share than ``audit.dominance_warning``.

A feature is a candidate when it is relied on beyond its evidence, or when its misscored-row
contrast is positive beyond noise and it is dominant or relied on beyond its evidence's point
estimate. A candidate is suspected once a test confirms that the model does better on the
audited rows without it (:mod:`sensaudit.checks.proxy_harm`); one the test could not have
confirmed (under 80% power against a pure proxy), or any candidate of an audit with fewer than
30 labelled rows, is a warning: the audit cannot judge it on these rows. A confirmed candidate
that the label follows on these rows (its evidence interval above 0) is over-relied, not a
proxy: a warning too. With the training rows (``data.train``) the tie to the label decides
(:mod:`sensaudit.checks.suspect_ties`): a feature relied on beyond its evidence's point
estimate whose tie fell from those rows to these is a suspect whatever the loss test said, a
confirmed candidate whose tie did not fall is over-relied, and one the loss test could not
judge whose tie held is cleared. Without labels only dominance can run, and a dominant
feature is then the suspect. The two label-based signals need one audited output (the label
scores one output). The words (reasons, limits, records, the report's section) are in
:mod:`sensaudit.checks.suspect_words`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from sensaudit.checks.base import Check, CheckResult, Ranking
from sensaudit.checks.evidence import (
    REST,
    Evidence,
    GroupedMoments,
    LabelGram,
    additive_evidence,
    binary_labels,
    describe_rule,
    misscored_groups,
    misscored_keys,
    shares,
)
from sensaudit.checks.proxy_harm import POWER, Harm, LabelledSample, harm_tests
from sensaudit.checks.suspect_ties import tie_verdicts
from sensaudit.checks.suspect_words import check_result, reasons_for
from sensaudit.methods.base import Attributions
from sensaudit.settings.options import Limit, check_declared, integer, number, option
from sensaudit.settings.sections import AuditSettings, MisscoredRule
from sensaudit.stats.accumulators import PoissonBootstrap, finite_rows
from sensaudit.stats.label_correlation import LabelTies
from sensaudit.stats.normal import normal_quantile

DEFAULT_RULE = MisscoredRule("top_error_quantile", 0.1)
# The confirmation test's mean is read on its normal approximation: from 30 rows the t quantile
# differs from the normal one by under 2%.
MIN_TEST_ROWS = 30


def _between(low: float, high: float) -> Limit:
    return number(low, high, expected=f"a number from {low:g} to {high:g}")


@dataclass(frozen=True)
class SuspectsOptions:
    """``audit.checks.suspects``: every field optional. Shares are fractions (0.1 = 10
    points)."""

    min_gap: float = option(0.025, _between(0, 1),
                            "share relied on beyond the evidence's upper end (or its estimate, "
                            "with a misscored-row contrast) to suspect")
    harm_level: float = option(0.05, _between(0.001, 0.5),
                               "the confirmation test's false-alarm level (one-sided)")
    harm_rows: int = option(4096, integer(30, 1_000_000),
                            "labelled rows sampled for the confirmation test")
    min_contrast: float = option(0.05, _between(0, 1), "share gained on the misscored rows")
    min_misscored_rows: int = option(20, integer(2, 10**9),
                                     "fewer misscored rows: too few to compare")
    bootstrap_samples: int = option(200, integer(0, 10_000),
                                    "bootstrap replicates of the evidence's interval")
    confidence: float = option(0.95, _between(0.5, 0.999), "the interval's confidence")
    seed: int = option(0, integer(0, 2**63 - 1, maximum_text="2**63 - 1"),
                       "the bootstrap's seed")
    ridge: float = option(0.01, _between(0, 1e6),
                          "the evidence fit's penalty, on standardized columns")
    tie_level: float = option(0.001, _between(1e-9, 0.5),
                              "the training-tie test's false-alarm level (one-sided; needs "
                              "data.train)")

    def __post_init__(self) -> None:
        check_declared(self)


class SuspectedProxies(Check):
    name = "suspects"
    Options = SuspectsOptions

    def __init__(self, settings: AuditSettings, options: SuspectsOptions):
        self.rule = settings.misscored or DEFAULT_RULE
        self.fail = settings.fail_on_suspects
        self.dominance = settings.dominance_warning
        self.declared = {p.feature for p in settings.proxies}
        self.options = options
        self.bootstrap = PoissonBootstrap(options.bootstrap_samples, options.seed)
        self.labelled = False  # the audit has a label column
        self.outputs = 0
        self.missing_labels = 0
        self.contrast: GroupedMoments | None = None
        self.gram: LabelGram | None = None
        # Each feature's correlation with the label on the audited rows, for the test of
        # whether the tie the training rows show holds here (checks/tie_shift.py).
        self.ties: LabelTies | None = None
        # The labelled rows' lowest and highest score: scores outside [0, 1] against 0/1
        # labels are logits, and misscored is then judged on sigmoid(score).
        self.score_range = (math.inf, -math.inf)
        # Labelled rows [x..., label] for the confirmation test (checks/proxy_harm.py): the same
        # bottom-k sample of row numbers whatever the chunks or workers.
        self.sample = LabelledSample(options.harm_rows)

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> SuspectedProxies:
        # Always built: an audit must look for proxies nobody declared.
        return cls(settings, cls.configured(settings) or SuspectsOptions())

    def update(self, rows: np.ndarray, x: torch.Tensor, attributions: Attributions,
               labels: np.ndarray | None) -> None:
        self.outputs = attributions.scores.shape[1]
        if labels is None:
            return
        self.labelled = True
        if self.outputs != 1:
            return  # one label, several outputs: which one it scores is not known
        if self.contrast is None or self.gram is None:
            self.contrast = GroupedMoments(self.bootstrap, x.shape[1])
            self.gram = LabelGram(x.shape[1])
            self.ties = LabelTies(x.shape[1])
        known = np.isfinite(labels)
        self.missing_labels += int((~known).sum())
        keep = finite_rows(attributions.scores, attributions.values).cpu().numpy() & known
        # Indexed where each tensor lives (the model's device), then brought to the CPU.
        index = torch.from_numpy(np.flatnonzero(keep))
        on_model = index.to(attributions.scores.device)
        scores = attributions.scores[on_model, 0].detach().to("cpu", torch.float64)
        values = attributions.values[on_model, 0].detach().to("cpu", torch.float64)
        xs = x[index.to(x.device)].detach().to("cpu", torch.float64)
        y = labels[keep]
        if len(y):
            low, high = self.score_range
            self.score_range = (min(low, float(scores.min())), max(high, float(scores.max())))
        keys = misscored_keys(scores.numpy(), y, self.rule)
        numbers = np.asarray(rows, dtype=np.int64)[keep]
        self.contrast.update(numbers, keys, xs, values.abs())
        self.gram.update(xs, torch.from_numpy(y))
        if self.ties is not None:
            self.ties.update(xs.numpy(), y)
        # float64 holds every float16, bfloat16 and float32 input exactly: cast back to test.
        self.sample.update(numbers, xs.numpy(), y)

    def merge(self, other: Check) -> None:
        if not isinstance(other, SuspectedProxies):
            raise TypeError(f"cannot merge a {type(other).__name__} into SuspectedProxies")
        self.labelled = self.labelled or other.labelled
        self.outputs = max(self.outputs, other.outputs)
        self.missing_labels += other.missing_labels
        self.score_range = (min(self.score_range[0], other.score_range[0]),
                            max(self.score_range[1], other.score_range[1]))
        if other.contrast is not None and other.gram is not None:
            if self.contrast is None or self.gram is None:
                self.contrast = GroupedMoments(self.bootstrap, other.gram.n_features)
                self.gram = LabelGram(other.gram.n_features)
            self.contrast.merge(other.contrast)
            self.gram.merge(other.gram)
            if self.ties is None:
                self.ties = LabelTies(other.gram.n_features)
            if other.ties is not None:
                self.ties.merge(other.ties)
        self.sample.merge(other.sample)

    def finish(self, ranking: Ranking) -> CheckResult:
        status: dict[str, str] = {"dominance": "ran"}
        evidence, contrast = None, None
        if not self.labelled:
            why = "not run: the audit has no label (set data.label)"
            status["reliance_vs_evidence"] = status["misscored_contrast"] = why
        elif len(ranking.outputs) != 1:
            why = (f"not run: the model has {len(ranking.outputs)} outputs and the label scores "
                   "one of them (select it with model.output)")
            status["reliance_vs_evidence"] = status["misscored_contrast"] = why
        else:
            evidence, status["reliance_vs_evidence"] = self._evidence()
            contrast, status["misscored_contrast"] = self._contrast(ranking.per_unit)
        figures = self._figures(ranking, evidence, contrast)
        harms: dict[str, Harm] = {}
        # Logit scores against a 0/1 label: both tests judge sigmoid(score).
        on_probability = self._on_probability(self.contrast.counts() if self.contrast else {})
        if evidence is not None or contrast is not None:
            figures, status["confirmation"], harms = self._confirm(ranking, figures, contrast,
                                                                   on_probability)
        if evidence is not None:
            figures, status["training_tie"] = tie_verdicts(
                figures, ranking.training, self.ties, ranking.features, self.options,
                self.dominance, contrast, harms, on_probability)
            figures = _ranked(figures)
        return check_result(self.name, table=figures, status=status, fail=self.fail,
                            options=self.options, dominance=self.dominance,
                            multi=len(ranking.outputs) > 1)

    # --- the three signals ------------------------------------------------------------------

    def _evidence(self) -> tuple[Evidence | None, str]:
        if self.gram is None or self.gram.rows == 0:
            return None, "not run: no row has a label"
        found = additive_evidence(self.gram, self.options.ridge)
        if found is None:
            return None, (f"not run: {self.gram.rows:,} labelled rows give no fit (the label "
                          "does not vary, or there are fewer rows than 2 x features + 3)")
        return found, f"ran on {found.rows:,} labelled rows"

    def _contrast(self, per_unit: bool) -> tuple[dict[str, Any] | None, str]:
        moments = self.contrast
        if moments is None or not moments.groups:
            return None, "not run: no row has a label"
        counts = moments.counts()
        on_probability = self._on_probability(counts)
        top = misscored_groups(counts, self.rule, on_probability)
        if top is None:
            return None, "not run: every row has the same error"
        misscored, fraction = top
        rest = set(counts) - misscored
        n_mis = sum(counts[k] for k in misscored if k in counts)
        n_rest = sum(counts[k] for k in rest)
        least = self.options.min_misscored_rows
        if n_mis < least or n_rest < least:
            return None, (f"not run: {int(n_mis):,} misscored and {int(n_rest):,} other rows "
                          f"(each needs at least {least}; audit.misscored)")
        _, mis_scaled = moments.scaled(misscored, per_unit)
        _, rest_scaled = moments.scaled(rest if rest else {REST}, per_unit)
        share_mis, share_rest = shares(mis_scaled), shares(rest_scaled)
        diff = (share_mis - share_rest).numpy()
        level = self.options.confidence
        low = high = np.full(diff.shape[1], np.nan)
        if diff.shape[0] > 1:
            low = np.quantile(diff[1:], (1 - level) / 2, axis=0)
            high = np.quantile(diff[1:], (1 + level) / 2, axis=0)
        found = {"share_misscored": share_mis[0].numpy(), "share_rest": share_rest[0].numpy(),
                 "contrast": diff[0], "low": low, "high": high, "misscored_rows": int(n_mis),
                 "rest_rows": int(n_rest), "fraction": fraction}
        rule = describe_rule(self.rule, on_probability, binary_labels(counts, self.rule))
        return found, (f"ran: {int(n_mis):,} misscored rows ({fraction:.1%}, {rule}"
                       f"{self._scale_note(on_probability)}) against {int(n_rest):,} others")

    def _on_probability(self, counts: dict[int, float]) -> bool:
        """Every label is 0 or 1 and some score is outside [0, 1]: the scores are logits, and
        an error in the label's units is one on sigmoid(score)."""
        low, high = self.score_range
        return binary_labels(counts, self.rule) and (low < 0 or high > 1)

    def _scale_note(self, on_probability: bool) -> str:
        if not on_probability or self.rule.kind == "threshold":
            return ""
        low, high = self.score_range
        return (f"; the label is 0/1 and the scores, from {low:.3g} to {high:.3g}, are not "
                "probabilities, so they are read as logits (model.transform: sigmoid audits "
                "the probabilities themselves; audit.misscored: {threshold: T} judges the "
                "decision at T)")

    # --- judging ----------------------------------------------------------------------------

    def _figures(self, ranking: Ranking, evidence: Evidence | None,
                 contrast: dict[str, Any] | None) -> pd.DataFrame:
        z = normal_quantile((1 + self.options.confidence) / 2)
        frames = []
        for output, group in ranking.table.groupby("output", sort=False):
            order = group.set_index("feature").loc[ranking.features]
            frame = pd.DataFrame({"output": output, "feature": ranking.features,
                                  "share": order["share"].to_numpy(dtype=float)})
            nan = np.full(len(frame), np.nan)
            if evidence is not None:
                frame["evidence_share"] = evidence.share
                frame["evidence_low"] = evidence.share_low(z)
                frame["evidence_high"] = evidence.share_high(z)
            else:
                frame["evidence_share"] = frame["evidence_low"] = frame["evidence_high"] = nan
            frame["reliance_gap"] = frame["share"] - frame["evidence_share"]
            for column, key in (("share_misscored", "share_misscored"),
                                ("share_rest", "share_rest"), ("contrast", "contrast"),
                                ("contrast_low", "low"), ("contrast_high", "high")):
                frame[column] = contrast[key] if contrast is not None else nan
            frame["declared"] = frame["feature"].isin(self.declared)
            frames.append(frame)
        table = pd.concat(frames, ignore_index=True)
        opts = self.options
        beyond = (table["share"] - table["evidence_high"]) >= opts.min_gap
        # The same gap over the evidence's point estimate as over its upper end: at half of it,
        # the contrast alone made genuine features candidates that the label supports nearly
        # as much as the model uses them (4 of the 6 runs flagging a genuine feature on fresh
        # seeds 9-11: one model's mean_texture, 1.8 points over its evidence's estimate).
        above_point = table["reliance_gap"] >= opts.min_gap
        contrasted = (table["contrast_low"] > 0) & (table["contrast"] >= opts.min_contrast)
        dominant = table["share"] > self.dominance
        if evidence is None and contrast is None:
            suspect = dominant
        else:
            suspect = beyond | (contrasted & (dominant | above_point))
        table["dominant"] = dominant
        table["candidate"] = suspect & (table["share"] > 0)
        table["suspect"] = table["candidate"] & ~table["declared"]
        # Declared proxies are judged by their limits; their signs are still shown.
        table["declared_with_signs"] = suspect & table["declared"] & (table["share"] > 0)
        table["score"] = (np.fmax(table["share"] - table["evidence_high"], 0).fillna(0)
                          + np.fmax(table["contrast"], 0).fillna(0)
                          + np.fmax(table["share"] - self.dominance, 0))
        for column in ("loss", "loss_change", "loss_change_low", "loss_change_high",
                       "predicted_by_others", "train_tie", "audit_tie", "tie_z", "tie_p"):
            table[column] = np.nan
        table["harm_rows"] = 0
        table["confirmed"] = table["unjudged"] = table["over_relied"] = False
        table["tie_fell"] = False
        table["power"] = np.nan
        table["reasons"] = [reasons_for(r, contrast, self.options, self.dominance)
                            if r.suspect or r.declared_with_signs else []
                            for r in table.itertuples()]
        return _ranked(table)

    def _confirm(self, ranking: Ranking, table: pd.DataFrame, contrast: dict[str, Any] | None,
                 on_probability: bool) -> tuple[pd.DataFrame, str, dict[str, Harm]]:
        """Each candidate (an undeclared feature relied on beyond its evidence or larger on
        the misscored rows) is a suspect only if the model is better on the audited rows
        without it: the loss-change test of checks/proxy_harm.py, Bonferroni over the
        candidates. Declared proxies are judged by their limits and not tested."""
        opts = self.options
        tested = list(dict.fromkeys(table.loc[table["suspect"], "feature"]))
        values = self.sample.values
        if not tested:
            return table, "no candidate to test", {}
        if ranking.model is None:
            return table, ("not run: the model is not at hand; the candidates stand "
                           "unconfirmed"), {}
        rows = 0 if values is None else len(values)
        if values is None or rows < MIN_TEST_ROWS:
            # Too few rows for any test: the audit cannot judge, as it cannot when a test on
            # more rows is too weak (more rows never soften the verdict).
            at = table["suspect"]
            table.loc[at, "unjudged"] = True
            table.loc[at, "suspect"] = False
            table["reasons"] = [list(r.reasons) + [
                f"only {rows} labelled rows: too few to test whether the model does better "
                f"without it (the test needs {MIN_TEST_ROWS})"] if r.unjudged
                else list(r.reasons) for r in table.itertuples()]
            table = _ranked(table)
            return table, (f"not run: {rows} labelled rows sampled (needs {MIN_TEST_ROWS}); "
                           f"{len(tested)} candidate(s) it cannot judge ({', '.join(tested)})"), {}
        x = torch.from_numpy(values[:, :-1]).to(ranking.dtype or torch.float64)
        try:
            found = harm_tests(ranking.model, x.to(ranking.device or x.device), values[:, -1],
                               ranking.features, tested, opts.harm_level, opts.confidence,
                               on_probability)
        except Exception as exc:  # noqa: BLE001 - the model's own error on moved rows
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return table, (f"not run: the model failed on rows with a feature's values moved "
                           f"({first[:200]}); the candidates stand unconfirmed"), {}
        for name, harm in found.items():
            at = table["feature"] == name
            table.loc[at, ["loss", "loss_change", "loss_change_low", "loss_change_high",
                           "predicted_by_others"]] = (harm.base, harm.change, harm.low, harm.high,
                                                      harm.predicted)
            table.loc[at, ["harm_rows", "confirmed", "unjudged", "power"]] = (
                harm.rows, harm.confirmed, harm.unjudged, harm.power)
        table["unjudged"] = table["suspect"] & table["unjudged"]
        # A proxy is a feature the label does not follow on these rows. One the label's fit
        # shows to carry information (its support's lower end above 0), that the model still
        # does better without, is over-relied (over-fit, or a copy of a genuine feature
        # splitting its support), not a proxy: a warning of its own.
        confirmed = table["suspect"] & table["confirmed"]
        table["over_relied"] = confirmed & (table["evidence_low"] > 0)
        table["suspect"] = confirmed & ~table["over_relied"]
        table["reasons"] = [reasons_for(r, contrast, opts, self.dominance,
                                        found.get(r.feature), on_probability)
                            if r.suspect or r.declared_with_signs or r.unjudged or r.over_relied
                            else list(r.reasons) for r in table.itertuples()]
        table = _ranked(table)
        kept = sum(h.confirmed for h in found.values())
        unjudged = [h.feature for h in found.values() if h.unjudged]
        over = list(table.loc[table["over_relied"], "feature"])
        rows = next(iter(found.values())).rows
        return table, (
            f"ran on {rows:,} labelled rows: {kept} of {len(tested)} candidate(s) confirmed "
            f"(the loss falls when the feature's effect is averaged out: one-sided, "
            f"{opts.harm_level:.0%} split over the candidates)"
            + (f"; {len(over)} over-relied, not "
               + ("a proxy" if len(over) == 1 else "proxies")
               + f" ({', '.join(over)}: the label follows "
               + ("it" if len(over) == 1 else "them") + " on these rows)" if over else "")
            + (f"; {len(unjudged)} it cannot judge on these rows ({', '.join(unjudged)}: the "
               f"test's power against a pure proxy is under {POWER:.0%})" if unjudged else "")
            ), found


def _ranked(table: pd.DataFrame) -> pd.DataFrame:
    """Suspects first, then by score and share: the order of suspects.csv and the section."""
    return table.sort_values(["suspect", "score", "share"], ascending=False,
                             kind="stable").reset_index(drop=True)
