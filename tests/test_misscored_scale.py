"""Misscored means wrong in the label's units (issue 20): a logistic model audited on its logit
(``model.transform: none``) against a 0/1 label is judged on the probability sigmoid(score), or by
its decision at a threshold against the class, never by |logit - label|."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from sensaudit import AuditSettings, audit_frame
from sensaudit.settings.sections import MisscoredRule


def _logistic_audit(misscored: MisscoredRule | None, chunk_rows: int = 97):
    """A logistic model fitted (in the test, from a seed) to a 0/1 label, audited on its logit
    (model.transform: none): large logits, some rows on the wrong side of 0."""
    generator = np.random.default_rng(21)
    x = generator.normal(size=(800, 4))
    y = (x @ np.array([3.0, -2.0, 1.0, 0.0]) + 1.5 * generator.normal(size=800) > 0)
    torch.manual_seed(21)
    linear = torch.nn.Linear(4, 1).double()
    optimiser = torch.optim.Adam(linear.parameters(), 0.05)
    xt, yt = torch.tensor(x), torch.tensor(y.astype(float))
    for _ in range(400):
        optimiser.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(linear(xt)[:, 0], yt).backward()
        optimiser.step()
    with torch.no_grad():
        linear.weight.mul_(40.0)  # an over-confident logit, as a separable training set gives
        linear.bias.mul_(40.0)
        logits = linear(xt)[:, 0].numpy()
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"]).assign(label=y.astype(float))
    result = audit_frame(linear, frame, label="label", chunk_rows=chunk_rows,
                         settings=AuditSettings(misscored=misscored, examples_in_report=5))
    return result, logits, y


def test_misscored_rows_of_a_logit_are_judged_on_the_probability():
    result, logits, y = _logistic_audit(None)
    wrong = (logits >= 0) != y
    assert 0.05 < wrong.mean() < 0.3 and np.abs(logits).max() > 100  # the premise
    misscored = [e for e in result.examples if e.reason == "misscored"]
    assert len(misscored) == 5
    # The rows furthest from their label in its units: confidently wrong, not confidently
    # right with a logit far from 1 (main listed "score 265, label 1 (off by 264)").
    for example in misscored:
        assert (example.score >= 0) != (example.label == 1), (example.score, example.label)
    sigmoid_error = np.abs(1 / (1 + np.exp(-logits.clip(-700, 700))) - y)
    assert misscored[0].rank_value == pytest.approx(sigmoid_error.max())
    check = next(c for c in result.checks if c.check == "suspects")
    contrast = check.summary["suspect_signals"]["misscored_contrast"]
    assert "|sigmoid(score) - label|" in contrast and "model.transform" in contrast


def test_a_threshold_on_a_logit_judges_the_decision_against_the_class():
    result, logits, y = _logistic_audit(MisscoredRule("threshold", 0.0))
    check = next(c for c in result.checks if c.check == "suspects")
    contrast = check.summary["suspect_signals"]["misscored_contrast"]
    wrong = int(((logits >= 0) != y).sum())
    # main: every negative logit (label 0 or 1) was misscored, 40-60% of rows.
    assert contrast.startswith(f"ran: {wrong:,} misscored rows ({wrong / len(y):.1%}, "
                               "the decision score >= 0 against the 0/1 label")


def test_misscored_on_the_probability_merges_over_chunkings():
    a, _, _ = _logistic_audit(None, chunk_rows=97)
    b, _, _ = _logistic_audit(None, chunk_rows=800)
    assert [(e.id, e.rank_value) for e in a.examples] == [(e.id, e.rank_value) for e in b.examples]
    signals = [next(c for c in r.checks if c.check == "suspects").summary["suspect_signals"]
               for r in (a, b)]
    assert signals[0] == signals[1]
