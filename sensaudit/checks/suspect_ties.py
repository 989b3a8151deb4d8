"""The suspects check's verdicts from the training-tie test (:mod:`sensaudit.checks.tie_shift`)
on its judged table: which features it tests, who becomes a suspect, who is over-relied, and
the reasons, with ``data.train`` given (:mod:`sensaudit.checks.suspects` calls it after the
loss-change test)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from sensaudit.checks.proxy_harm import Harm
from sensaudit.checks.suspect_words import Limits, reasons_for
from sensaudit.checks.tie_shift import tie_shifts
from sensaudit.stats.label_correlation import LabelTies


def tie_verdicts(table: pd.DataFrame, training: LabelTies | None,
                 audited: LabelTies | None, features: list[str], opts: Limits,
                 dominance: float, contrast: dict[str, Any] | None, harms: dict[str, Harm],
                 on_probability: bool) -> tuple[pd.DataFrame, str]:
    """With the training rows (data.train) the fall of a feature's tie to the label decides
    (checks/tie_shift.py): each undeclared feature relied on beyond its evidence's point
    estimate by min_gap (or a candidate already) is a suspect when its tie fell from the
    training rows to these, whatever the loss-change test said (the fall is what makes a
    proxy, and it needs neither the model nor many rows), and a candidate the loss-change
    test confirmed whose tie did not fall is over-relied, not a proxy. One whose tie fell
    that the label still follows here (its evidence's lower end above 0) is over-relied
    too. A candidate that test could not judge is cleared when its tie held."""
    if training is None:
        return table, ("not run: no training rows (data.train: the rows the model was "
                       "trained on)")
    if audited is None:
        return table, "not run: no audited row has a label"
    relied = (table["reliance_gap"] >= opts.min_gap) | table["candidate"]
    tested_at = relied & (table["share"] > 0) & ~table["declared"]
    tested = list(dict.fromkeys(table.loc[tested_at, "feature"]))
    if not tested:
        return table, (f"no feature to test ({training.rows:,} training rows): none is "
                       "relied on beyond its evidence's estimate by min_gap")
    found = tie_shifts(training, audited, features, tested, opts.tie_level)
    if not found:
        return table, (f"not run: {training.rows:,} training and {audited.rows:,} audited "
                       "rows with a label (each side needs 4)")
    for name, tie in found.items():
        at = table["feature"] == name
        table.loc[at, ["train_tie", "audit_tie", "tie_z", "tie_p"]] = (
            tie.train, tie.audit, tie.z, tie.p)
        table.loc[at, ["tie_fell", "candidate"]] = (tie.fell, True)
    fell = table["tie_fell"] & ~table["declared"]
    # With the training rows at hand, a proxy is a feature whose tie fell: one the model does
    # better without whose tie did not fall is over-relied (the audited rows' own test flagged
    # genuine features of over-fit models in 3 of 1,872 benchmark runs; the fall, none).
    kept = table["suspect"] & table["confirmed"] & table["feature"].isin(found) & ~fell
    steady = list(table.loc[kept, "feature"])
    over = (fell & (table["evidence_low"] > 0)) | kept
    table["suspect"] = (table["suspect"] | fell) & ~over
    table["over_relied"] = (table["over_relied"] | over) & ~table["suspect"]
    # A candidate the loss-change test could not judge is judged by the tie: a suspect when
    # it fell, cleared when it held (a tie beyond chance in training, no sign of a fall here:
    # a proxy's would have fallen), still unjudged when the training rows show no tie to lose.
    held = table["feature"].map(lambda f: f in found and found[f].held)
    cleared = list(table.loc[table["unjudged"] & held & ~fell, "feature"])
    table["unjudged"] = table["unjudged"] & ~fell & ~held
    table["reasons"] = [reasons_for(r, contrast, opts, dominance, harms.get(r.feature),
                                    on_probability, found.get(r.feature))
                        if (r.tie_fell or r.over_relied) and not r.declared
                        else list(r.reasons) for r in table.itertuples()]
    fallen = [t.feature for t in found.values() if t.fell]
    return table, (
        f"ran on {training.rows:,} training and {audited.rows:,} audited rows: "
        f"{len(fallen)} of {len(found)} feature(s) relied on beyond their evidence lost "
        f"their tie to the label (one-sided, {opts.tie_level:g} split over them)"
        + (f": {', '.join(fallen)}" if fallen else "")
        + (f"; the model does better without {', '.join(steady)}, but "
           + ("its tie" if len(steady) == 1 else "their ties")
           + " did not fall: over-relied" if steady else "")
        + (f"; {', '.join(cleared)}, which the loss-change test could not judge, kept "
           + ("its tie" if len(cleared) == 1 else "their ties") + ": cleared"
           if cleared else ""))
