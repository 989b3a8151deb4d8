"""Two audits of the same rows -> how the sensitivities moved, with their noise. No I/O.

The two models may take different columns (a retrain that dropped a leaky column): both then
read the union of their columns, each fed its own (``inputs``; the loader's
:class:`~sensaudit.inputs.model_inputs.SelectedColumns`), so a column a model does not take
has exactly zero sensitivity in it, and every share, normalised over all the columns read, is
the share over that model's own inputs. A feature one model takes and the other does not is
marked ``added`` or ``removed`` (column ``status``), with its figures on the side that has it
and none for the change; rank agreement is measured on the common features, the gates and
intervals of the common features as for equal inputs, and an added proxy's share counts as
grown from zero for compare.max_proxy_share_increase.

The plan (:mod:`sensaudit.pipeline.plan`, ``compare`` given) audits every model on the same
rows on either engine; its steps call :func:`add_bootstrap` and :func:`add_agreement` per chunk,
and :func:`comparison_result` turns the merged accumulators into the comparison.

Both models see the same chunks, so per-row agreement (cosine of the two rows' contribution
vectors) and score changes are exact. Confidence intervals come from a paired Poisson bootstrap
over hashed buckets of rows (:mod:`sensaudit.stats.bucket_bootstrap`, which says why it is
valid): a row's bucket and a bucket's weight in each replicate are hashes of (seed, row
number) and (seed, replicate, bucket), so the report is the same for the same input whatever
the chunk size or engine, and old and new models are resampled together. The resampled
feature standard deviations come from the same buckets.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from sensaudit.core.errors import ConfigError
from sensaudit.methods.base import Attributions
from sensaudit.pipeline.compare_noise import RetrainingNoise, change_interval, retraining_noise
from sensaudit.results.audit_result import AuditResult
from sensaudit.results.comparison import (
    ChangedRow,
    ComparisonResult,
    CosineSummary,
    OutputAgreement,
    ProxyIncrease,
    ScoreChange,
    noise_name,
)
from sensaudit.settings.sections import AuditSettings, CompareSettings
from sensaudit.stats.accumulators import AgreementAccumulator, finite_rows
from sensaudit.stats.bucket_bootstrap import BucketBootstrap

# Each compared model's own input columns, in its order, where they differ from the columns
# both read (None: it takes them all); (old, new).
ModelPair = tuple[tuple[str, ...] | None, tuple[str, ...] | None]

# The intervals' replicates are [samples, features] per statistic (two feature moments, one
# sum per model and output) and are all needed at the end, when each replicate's shares are
# normalised over every feature. Their size is bounded before any row is read: 2**25 float64
# values (256 MiB) per statistic, about 1 GiB in all, instead of a run that grows until the
# machine kills it (exit 3). The buckets' sums are held to the same bound
# (stats.bucket_bootstrap.MAX_SUM_ELEMENTS).
MAX_BOOTSTRAP_ELEMENTS = 2**25


def check_bootstrap_size(cmp: CompareSettings, features: int, source: object,
                         outputs: int = 1) -> None:
    """Refuse compare.bootstrap_samples x features (x the model's outputs, once known) over
    MAX_BOOTSTRAP_ELEMENTS, naming the key and the largest replicate count that fits."""
    per_sample = features * outputs
    if cmp.bootstrap_samples * per_sample <= MAX_BOOTSTRAP_ELEMENTS:
        return
    fits = MAX_BOOTSTRAP_ELEMENTS // max(per_sample, 1)
    shape = f"{features:,} features" + (f" x {outputs:,} outputs" if outputs > 1 else "")
    raise ConfigError(
        f"{source}: compare.bootstrap_samples {cmp.bootstrap_samples:,} x {shape} "
        f"is {cmp.bootstrap_samples * per_sample:,} values per accumulator, over the limit of "
        f"{MAX_BOOTSTRAP_ELEMENTS:,} (about 256 MiB each); set compare.bootstrap_samples to "
        f"at most {fits:,} (0 turns the row bootstrap off)")


def add_bootstrap(bootstrap: BucketBootstrap, rows: np.ndarray, x: torch.Tensor,
                  results: list[Attributions]) -> None:
    """One chunk's rows into the paired bootstrap: their buckets' input sums and each model's
    |attribution| sums (the first two models: old and new)."""
    # Each model's intervals use the rows its own statistics use. Only old and new have
    # intervals; the seed replicas that may follow them in results have none.
    paired = results[: bootstrap.models]
    bootstrap.update(rows, x, [a.values for a in paired],
                     [finite_rows(a.scores, a.values) for a in paired])


def add_agreement(agreement: AgreementAccumulator, rows: np.ndarray, ids: object,
                  results: list[tuple[torch.Tensor, torch.Tensor]], std: torch.Tensor,
                  per_unit: bool) -> None:
    """One chunk's per-row agreement of the old and new model (``results``: each model's
    scores and values, on the CPU), contributions in score units (x ``std`` when per unit)."""
    (s_old, v_old), (s_new, v_new) = results[:2]
    finite = finite_rows(s_old, v_old) & finite_rows(s_new, v_new)
    scale = std if per_unit else 1.0
    agreement.update(rows, ids, s_old, s_new, v_old * scale, v_new * scale, finite)


def comparison_result(audits: list[AuditResult], bootstrap: BucketBootstrap,
                      agreement: AgreementAccumulator,
                      settings: AuditSettings, cmp: CompareSettings, *,
                      replicas: tuple[int, int], per_unit: bool,
                      inputs: ModelPair = (None, None)) -> ComparisonResult:
    """The comparison from the audits of every model (old, new, then the replicas) and the
    merged bootstrap and agreement accumulators; ``inputs`` as for :func:`compare_on_rows`."""
    old, new = audits[:2]
    noise = retraining_noise([old, *audits[2 : 2 + replicas[0]]],
                             [new, *audits[2 + replicas[0] :]])
    if bootstrap.samples:
        resampled = bootstrap.resampled()
        shares_old, shares_new = (resampled.shares(m, per_unit) for m in (0, 1))
    else:
        shares_old = shares_new = torch.zeros(0, len(new.outputs), len(new.features))
    table_cmp = comparison_table(old, new, shares_old, shares_new, cmp.confidence,
                                 min_change=cmp.min_change / 100, noise=noise, inputs=inputs)
    overall = {output: output_agreement(table_cmp, output, cmp.top_k,
                                        agreement.summary(i, output))
               for i, output in enumerate(new.outputs)}
    increases = []
    if cmp.max_proxy_share_increase is not None:
        proxies = {p.feature for p in settings.proxies}
        # An added feature's share grew from nothing: the old model does not take it.
        grown_by = table_cmp["delta_share"]
        if "status" in table_cmp.columns:
            grown_by = grown_by.where(table_cmp["status"] != "added", table_cmp["share_new"])
        grown = table_cmp[table_cmp["feature"].isin(proxies)
                          & (grown_by > cmp.max_proxy_share_increase)]
        increases = [ProxyIncrease(feature=r.feature, output=r.output,
                                   delta_share=float(grown_by[i]),
                                   margin=cmp.max_proxy_share_increase)
                     for i, r in zip(grown.index, grown.itertuples(), strict=True)]
    result = ComparisonResult(
        table=table_cmp, overall=overall, old=old, new=new, proxy_increases=increases,
        settings={"bootstrap_samples": cmp.bootstrap_samples, "confidence": cmp.confidence,
                  "seed": cmp.seed, "top_k": cmp.top_k,
                  "max_proxy_share_increase": cmp.max_proxy_share_increase,
                  "min_change": cmp.min_change,
                  "noise": "rows and retraining" if noise is not None else "rows",
                  "old_replicas": [a.model_path for a in audits[2 : 2 + replicas[0]]],
                  "new_replicas": [a.model_path for a in audits[2 + replicas[0] :]],
                  "retraining_dof": noise.dof if noise is not None else None})
    result.findings = comparison_findings(result, [p.feature for p in settings.proxies])
    return result


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); nan when a ranking is constant."""
    ra = pd.Series(a).rank(method="average").to_numpy()
    rb = pd.Series(b).rank(method="average").to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (tie-corrected); nan when a ranking is constant."""
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    upper = np.triu_indices(len(a), k=1)
    da, db = da[upper], db[upper]
    concordance = float((da * db).sum())
    denominator = math.sqrt(float((da != 0).sum()) * float((db != 0).sum()))
    return concordance / denominator if denominator else float("nan")


def top_k_overlap(share_old: np.ndarray, share_new: np.ndarray, k: int) -> float:
    """Fraction of the old top-k features still in the new top-k."""
    k = min(k, len(share_old))
    top_old = set(np.argsort(-share_old, kind="stable")[:k].tolist())
    top_new = set(np.argsort(-share_new, kind="stable")[:k].tolist())
    return len(top_old & top_new) / k if k else float("nan")


def comparison_table(old: AuditResult, new: AuditResult, shares_old: torch.Tensor,
                     shares_new: torch.Tensor, confidence: float, *, min_change: float = 0.0,
                     noise: RetrainingNoise | None = None,
                     inputs: ModelPair = (None, None)) -> pd.DataFrame:
    """Per (output, feature) before/after figures with bootstrap intervals.

    shares_*: [samples, outputs, features] bootstrap replicates (samples may be 0).
    ``min_change`` (a share, 0.02 = 2 points): a smaller change is never marked ``changed``.
    ``noise``: the retraining noise the change's interval adds to row sampling.
    ``inputs``: old's and new's own columns when they differ (see the module): a ``status``
    column (common, added, removed) follows the feature's.
    """
    lo_q, hi_q = (1 - confidence) / 2, (1 + confidence) / 2
    frames = []
    for i, output in enumerate(new.outputs):
        a = old.table[old.table["output"] == old.outputs[i]].set_index("feature")
        b = new.table[new.table["output"] == output].set_index("feature")
        features = new.features
        frame = pd.DataFrame({"output": output, "feature": features})
        frame["share_old"] = a.loc[features, "share"].to_numpy()
        frame["share_new"] = b.loc[features, "share"].to_numpy()
        frame["delta_share"] = frame["share_new"] - frame["share_old"]
        low = high = None
        if shares_old.shape[0]:
            delta = (shares_new[:, i, :] - shares_old[:, i, :]).numpy()
            frame["share_old_low"] = np.quantile(shares_old[:, i, :].numpy(), lo_q, axis=0)
            frame["share_old_high"] = np.quantile(shares_old[:, i, :].numpy(), hi_q, axis=0)
            frame["share_new_low"] = np.quantile(shares_new[:, i, :].numpy(), lo_q, axis=0)
            frame["share_new_high"] = np.quantile(shares_new[:, i, :].numpy(), hi_q, axis=0)
            low, high = bootstrap_interval(delta, confidence)
        sd = noise.sd[output] if noise is not None else None
        interval = change_interval(frame["delta_share"].to_numpy(), low, high, sd,
                                   noise.dof if noise is not None else 0, confidence)
        if sd is not None:
            frame["retraining_sd"] = sd
        if interval is not None:
            frame["delta_share_low"], frame["delta_share_high"] = interval
            # Outside its noise: the change's interval excludes zero.
            frame["significant"] = (frame["delta_share_low"] > 0) | (frame["delta_share_high"] < 0)
        else:
            # No bootstrap, no measure of noise: no change is called larger than it.
            frame["significant"] = False
        # Marked as a change only when it is outside its noise and large enough to matter.
        frame["changed"] = frame["significant"] & (frame["delta_share"].abs() >= min_change)
        with np.errstate(divide="ignore", invalid="ignore"):
            frame["relative_change"] = frame["delta_share"] / frame["share_old"]
        frame["scaled_sensitivity_old"] = a.loc[features, "scaled_sensitivity"].to_numpy()
        frame["scaled_sensitivity_new"] = b.loc[features, "scaled_sensitivity"].to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            frame["sensitivity_ratio"] = (frame["scaled_sensitivity_new"]
                                          / frame["scaled_sensitivity_old"])
        frame["rank_old"] = a.loc[features, "rank"].to_numpy()
        frame["rank_new"] = b.loc[features, "rank"].to_numpy()
        frame["flagged_old"] = a.loc[features, "flagged"].to_numpy()
        frame["flagged_new"] = b.loc[features, "flagged"].to_numpy()
        frame["gate_changed"] = frame["flagged_old"] != frame["flagged_new"]
        order = ["rank_new", "feature"]
        if inputs != (None, None):
            frame = _mark_inputs(frame, *inputs)
            order = ["rank_new", "rank_old", "feature"]  # removed features last, by old rank
        frames.append(frame.sort_values(order, kind="stable"))
    return pd.concat(frames, ignore_index=True)


_OLD_SIDE = ("share_old", "share_old_low", "share_old_high", "scaled_sensitivity_old", "rank_old")
_NEW_SIDE = ("share_new", "share_new_low", "share_new_high", "scaled_sensitivity_new", "rank_new")
_CHANGE = ("delta_share", "delta_share_low", "delta_share_high", "retraining_sd",
           "relative_change", "sensitivity_ratio")


def _mark_inputs(frame: pd.DataFrame, old: tuple[str, ...] | None,
                 new: tuple[str, ...] | None) -> pd.DataFrame:
    """A feature only one model takes: ``status`` added / removed, its figures on the side
    that has it only (the other side's, an exact zero, is no measurement of that model), no
    change, no significance, no gate change."""
    in_old = frame["feature"].isin(old) if old is not None else pd.Series(True, frame.index)
    in_new = frame["feature"].isin(new) if new is not None else pd.Series(True, frame.index)
    frame.insert(2, "status", np.where(~in_old, "added", np.where(~in_new, "removed", "common")))
    for side, present in ((_OLD_SIDE, in_old), (_NEW_SIDE, in_new)):
        for column in side:
            if column in frame.columns:
                kind = "Int64" if column.startswith("rank") else "float64"
                frame[column] = frame[column].astype(kind).where(present)
    both = in_old & in_new
    for column in _CHANGE:
        if column in frame.columns:
            frame[column] = frame[column].where(both)
    for column in ("significant", "changed", "gate_changed"):
        frame[column] = frame[column] & both
    frame["flagged_old"] = frame["flagged_old"] & in_old
    frame["flagged_new"] = frame["flagged_new"] & in_new
    return frame


def bootstrap_interval(replicates: np.ndarray, confidence: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval of replicates [samples, ...] over the first axis."""
    return (np.quantile(replicates, (1 - confidence) / 2, axis=0),
            np.quantile(replicates, (1 + confidence) / 2, axis=0))


def output_agreement(table: pd.DataFrame, output: str, k: int,
                     per_row: dict[str, Any]) -> OutputAgreement:
    """One output's agreement: the rank correlations and top-k overlap of its shares in the
    comparison table (over the features both models take), and ``per_row``, the figures of
    :meth:`AgreementAccumulator.summary`."""
    group = table[table["output"] == output]
    if "status" in group.columns:
        group = group[group["status"] == "common"]
    old, new = group["share_old"].to_numpy(), group["share_new"].to_numpy()
    return OutputAgreement(
        spearman=spearman(old, new), kendall_tau=kendall_tau(old, new), top_k=min(k, len(old)),
        top_k_overlap=top_k_overlap(old, new, k), cosine=CosineSummary(**per_row["cosine"]),
        score_change=ScoreChange(**per_row["score_change"]),
        least_agreeing_rows=tuple(ChangedRow(**r) for r in per_row["least_agreeing_rows"]),
        most_moved_rows=tuple(ChangedRow(**r) for r in per_row["most_moved_rows"]))


def comparison_findings(result: ComparisonResult, proxies: list[str]) -> list[str]:
    """Plain-words sentences: what fell, what rose, what gates changed, how scores moved.
    With several outputs every sentence names its output."""
    lines: list[str] = []
    multi = len(result.new.outputs) > 1
    table = result.table
    has_intervals = "delta_share_low" in table.columns
    noise = noise_name(result.settings)

    def where(output: str) -> str:
        return f"Output '{output}': " if multi else ""

    for output in result.new.outputs:
        group = table[table["output"] == output]
        for r in group.itertuples():
            if getattr(r, "status", "common") != "common":
                lines.append(where(output) + _presence(r))
                continue
            noteworthy = abs(r.delta_share) >= 0.05 and (r.changed or not has_intervals)
            if r.feature in proxies or noteworthy:
                lines.append(where(output) + _movement(r, has_intervals, noise))
        leader_new = group.sort_values("rank_new").iloc[0]
        leader_old = group.sort_values("rank_old").iloc[0]
        if leader_new["feature"] != leader_old["feature"]:
            lines.append(f"{where(output)}{leader_new['feature']} is now the strongest driver "
                         f"({leader_new['share_new']:.0%}), replacing {leader_old['feature']}.")
        agreement = result.overall[output]
        lines.append(
            f"{where(output)}Rankings agree with Spearman {_fmt(agreement.spearman)} and "
            f"Kendall tau {_fmt(agreement.kendall_tau)}; {agreement.top_k_overlap:.0%} of "
            f"the old top {agreement.top_k} remain. Per row, the two models' contribution "
            f"vectors have median cosine {_fmt(agreement.cosine.median)}. Scores moved by "
            f"{agreement.score_change.mean_abs:.3g} on average (largest "
            f"{agreement.score_change.max_abs:.3g}).")
    for r in table[table["gate_changed"]].itertuples():
        state = ("passed its gate in the old model and fails it in the new one"
                 if r.flagged_new else
                 "was flagged by the old model and passes its gate in the new one")
        lines.append(f"{where(r.output)}{r.feature} {state}.")
    for inc in result.proxy_increases:
        lines.append(f"{where(inc.output)}{inc.feature}'s share grew by "
                     f"{_points(inc.delta_share)}, more than the allowed "
                     f"{_points(inc.margin, sign=False)} (compare.max_proxy_share_increase).")
    return lines


def _presence(r: Any) -> str:  # r: a row of the comparison table's itertuples()
    if r.status == "removed":
        return (f"{r.feature} was removed: the new model does not take it (it held "
                f"{r.share_old:.0%} of the old model's sensitivity, rank {r.rank_old}).")
    return (f"{r.feature} was added: the old model does not take it (it holds "
            f"{r.share_new:.0%} of the new model's sensitivity, rank {r.rank_new}).")


def _movement(r: Any, has_intervals: bool, noise: str) -> str:
    verb = "fell" if r.delta_share < 0 else "rose"
    ci = ""
    if has_intervals:
        ci = (f" (change {_points(r.delta_share)}, interval {r.delta_share_low * 100:+.1f} to "
              f"{_points(r.delta_share_high)}; {noise})")
    caveat = ""
    if has_intervals and not r.significant:
        caveat = "; within its noise"
    elif has_intervals and not r.changed:
        caveat = "; below compare.min_change"
    return (f"{r.feature}'s share {verb} from {r.share_old:.0%} to {r.share_new:.0%}{ci}, rank "
            f"{r.rank_old} -> {r.rank_new}{caveat}.")


def _points(share: float, sign: bool = True) -> str:
    """A share difference in points: 0.136 -> '+13.6 points'."""
    return f"{share * 100:{'+' if sign else ''}.1f} points"


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"
