"""Two audits of the same rows -> how the sensitivities moved, with their noise. No I/O.

Both models see the same chunks, so per-row agreement (cosine of the two rows' contribution
vectors) and score changes are exact. Confidence intervals come from a Poisson bootstrap over
rows: every row gets a Poisson(1) weight per replicate, drawn from a hash of (seed, replicate,
row number), so the weights, and the report, are the same for the same input whatever the
chunk size, and old and new models are resampled together (a paired bootstrap). The resampled
feature standard deviations come from the same weights in the first pass.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .analysis import AuditResult

COSINE_BINS = 2000  # histogram resolution for the cosine quantiles: 0.001
# Poisson(1) cumulative probabilities: P(K <= k) for k = 0..15 (enough: P(K > 15) < 1e-13).
_POISSON1_CDF = np.cumsum([math.exp(-1) / math.factorial(k) for k in range(16)])
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    # A counter-based hash (Steele et al.'s SplitMix64 finaliser): numpy uint64 arithmetic wraps.
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class PoissonBootstrap:
    """Poisson(1) row weights per replicate, a pure function of (seed, replicate, row)."""

    def __init__(self, samples: int, seed: int):
        self.samples = samples
        self.seed = seed

    def weights(self, rows: np.ndarray) -> torch.Tensor:
        """float64 [samples, len(rows)] weights for the given 1-based row numbers."""
        if self.samples == 0:
            return torch.zeros(0, len(rows), dtype=torch.float64)
        with np.errstate(over="ignore"):
            replicate = np.arange(self.samples, dtype=np.uint64)[:, None]
            key = (np.uint64(self.seed) * np.uint64(0x100000001B3)) ^ (replicate << np.uint64(40))
            z = _splitmix64(key + np.asarray(rows, dtype=np.uint64)[None, :])
        uniform = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
        return torch.from_numpy(np.searchsorted(_POISSON1_CDF, uniform).astype(np.float64))


class BootstrapMoments:
    """Per-replicate weighted feature variances (first pass). Shifted sums keep float64 exact
    enough: values are centred on the first chunk's mean before squaring."""

    def __init__(self, bootstrap: PoissonBootstrap, n_features: int):
        self.bootstrap = bootstrap
        b = bootstrap.samples
        self.shift: torch.Tensor | None = None
        self.w = torch.zeros(b, 1, dtype=torch.float64)
        self.s1 = torch.zeros(b, n_features, dtype=torch.float64)
        self.s2 = torch.zeros(b, n_features, dtype=torch.float64)

    def update(self, rows: np.ndarray, x: torch.Tensor) -> None:
        x = x.detach().to("cpu", torch.float64)
        if self.shift is None:
            self.shift = x.mean(0)
        centred = x - self.shift
        weights = self.bootstrap.weights(rows)
        self.w += weights.sum(1, keepdim=True)
        self.s1 += weights @ centred
        self.s2 += weights @ centred**2

    @property
    def std(self) -> torch.Tensor:
        """[samples, features] weighted sample standard deviations."""
        w = self.w.clamp_min(2)
        var = (self.s2 - self.s1**2 / w) / (w - 1)
        return var.clamp_min(0).sqrt()


class BootstrapSensitivity:
    """Per-replicate weighted mean |gradient| of one model (second pass)."""

    def __init__(self, bootstrap: PoissonBootstrap):
        self.bootstrap = bootstrap
        self.w = torch.zeros(bootstrap.samples, 1, 1, dtype=torch.float64)
        self.sum_abs: torch.Tensor | float = 0.0  # [samples, outputs, features] once updated

    def update(self, weights: torch.Tensor, jac: torch.Tensor, finite: torch.Tensor) -> None:
        """weights: [samples, rows]; jac: [rows, outputs, features]; finite: bool [rows]."""
        w = weights * finite.to(torch.float64)
        a = jac.detach().to("cpu", torch.float64).abs().nan_to_num(0.0, 0.0, 0.0)
        self.w += w.sum(1).reshape(-1, 1, 1)
        self.sum_abs += torch.einsum("br,rmn->bmn", w, a)

    def shares(self, std: torch.Tensor) -> torch.Tensor:
        """[samples, outputs, features] shares under each replicate's weights."""
        scaled = self.sum_abs / self.w.clamp_min(1) * std[:, None, :]
        total = scaled.sum(2, keepdim=True)
        return torch.where(total > 0, scaled / total, torch.zeros_like(scaled))


@dataclass
class RowChange:
    id: object
    output: int  # the output's index; named in AgreementAccumulator.summary
    score_old: float
    score_new: float
    cosine: float


class AgreementAccumulator:
    """Per-row agreement of the two models (cosine of contribution vectors) and score moves,
    kept separately for each output (sized by the first update)."""

    def __init__(self, keep: int = 10):
        self.keep = keep
        self.rows = 0
        self._order = itertools.count()
        self.histogram: np.ndarray | None = None  # [outputs, COSINE_BINS] once updated

    def _start(self, m: int) -> None:
        self.cosine_sum = np.zeros(m)
        self.histogram = np.zeros((m, COSINE_BINS), dtype=np.int64)
        self.delta_sum = np.zeros(m)
        self.abs_delta_sum = np.zeros(m)
        self.max_abs_delta = np.zeros(m)
        self._least_agreeing: list[list] = [[] for _ in range(m)]
        self._most_moved: list[list] = [[] for _ in range(m)]

    def update(self, ids: list, scores_old: torch.Tensor, scores_new: torch.Tensor,
               contrib_old: torch.Tensor, contrib_new: torch.Tensor, finite: torch.Tensor
               ) -> None:
        """scores: [rows, outputs]; contrib: [rows, outputs, features] (gradient x std);
        finite: bool [rows], the rows both models scored with finite values."""
        kept = finite.nonzero().flatten()
        so, sn = scores_old[kept].double(), scores_new[kept].double()
        co, cn = contrib_old[kept].double(), contrib_new[kept].double()
        norm_old, norm_new = co.norm(dim=2), cn.norm(dim=2)
        dot = (co * cn).sum(2)
        # Both vectors zero: the models agree (neither responds); one zero: no agreement.
        cosine = torch.where((norm_old > 0) & (norm_new > 0),
                             dot / (norm_old * norm_new).clamp_min(1e-300),
                             torch.where((norm_old == 0) & (norm_new == 0), 1.0, 0.0))
        cosine = cosine.clamp(-1, 1)  # [rows, outputs]
        delta = sn - so
        if self.histogram is None:
            self._start(cosine.shape[1])
        self.rows += cosine.shape[0]
        self.cosine_sum += cosine.sum(0).numpy()
        self.delta_sum += delta.sum(0).numpy()
        self.abs_delta_sum += delta.abs().sum(0).numpy()
        if cosine.shape[0]:
            self.max_abs_delta = np.maximum(self.max_abs_delta, delta.abs().amax(0).numpy())
        bins = ((cosine + 1) / 2 * COSINE_BINS).long().clamp(0, COSINE_BINS - 1)
        k = min(self.keep, cosine.shape[0])
        for o in range(cosine.shape[1]):
            self.histogram[o] += np.bincount(bins[:, o].numpy(), minlength=COSINE_BINS)
            if k == 0:
                continue
            # Only this chunk's own top candidates can enter the kept lists: no row loop.
            candidates = set(cosine[:, o].topk(k, largest=False).indices.tolist())
            candidates |= set(delta[:, o].abs().topk(k).indices.tolist())
            for r in sorted(candidates):
                change = RowChange(id=ids[int(kept[r])], output=o,
                                   score_old=float(so[r, o]), score_new=float(sn[r, o]),
                                   cosine=float(cosine[r, o]))
                self._push(self._least_agreeing[o], -change.cosine, change)
                self._push(self._most_moved[o], abs(change.score_new - change.score_old),
                           change)

    def _push(self, heap: list, key: float, change: RowChange) -> None:
        item = (key, next(self._order), change)
        if len(heap) < self.keep:
            heapq.heappush(heap, item)
        elif key > heap[0][0]:
            heapq.heapreplace(heap, item)

    def cosine_quantile(self, output: int, q: float) -> float:
        """Quantile of one output's per-row cosines, to the histogram's 0.001 resolution."""
        if self.rows == 0:
            return float("nan")
        cumulative = np.cumsum(self.histogram[output])
        index = int(np.searchsorted(cumulative, q * self.rows, side="left"))
        return -1 + (min(index, COSINE_BINS - 1) + 0.5) * 2 / COSINE_BINS

    def summary(self, output: int, name: str) -> dict:
        """The agreement figures comparison.json reports for output number ``output``."""
        rows = max(self.rows, 1)
        quantiles = (("p05", 0.05), ("p25", 0.25), ("median", 0.5), ("p75", 0.75),
                     ("p95", 0.95))
        return {
            "cosine": {"mean": float(self.cosine_sum[output]) / rows,
                       **{k: self.cosine_quantile(output, q) for k, q in quantiles}},
            "score_change": {"mean": float(self.delta_sum[output]) / rows,
                             "mean_abs": float(self.abs_delta_sum[output]) / rows,
                             "max_abs": float(self.max_abs_delta[output])},
            "least_agreeing_rows": [{**vars(c), "output": name}
                                    for c in _ordered(self._least_agreeing[output])],
            "most_moved_rows": [{**vars(c), "output": name}
                                for c in _ordered(self._most_moved[output])],
        }


def _ordered(heap: list) -> list[RowChange]:
    return [c for _, _, c in sorted(heap, key=lambda t: (-t[0], t[1]))]


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


@dataclass
class ComparisonResult:
    """Everything ``compare`` found; :mod:`sensaudit.report` writes it."""

    table: pd.DataFrame  # one row per (output, feature)
    overall: dict  # per output: spearman, kendall_tau, top_k_overlap, agreement, score moves
    old: AuditResult
    new: AuditResult
    proxy_increases: list[dict] = field(default_factory=list)  # over compare's margin
    findings: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.new.passed and not self.proxy_increases


def comparison_table(old: AuditResult, new: AuditResult, shares_old: torch.Tensor,
                     shares_new: torch.Tensor, confidence: float) -> pd.DataFrame:
    """Per (output, feature) before/after figures with bootstrap intervals.

    shares_*: [samples, outputs, features] bootstrap replicates (samples may be 0).
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
        if shares_old.shape[0]:
            delta = (shares_new[:, i, :] - shares_old[:, i, :]).numpy()
            frame["share_old_low"] = np.quantile(shares_old[:, i, :].numpy(), lo_q, axis=0)
            frame["share_old_high"] = np.quantile(shares_old[:, i, :].numpy(), hi_q, axis=0)
            frame["share_new_low"] = np.quantile(shares_new[:, i, :].numpy(), lo_q, axis=0)
            frame["share_new_high"] = np.quantile(shares_new[:, i, :].numpy(), hi_q, axis=0)
            frame["delta_share_low"] = np.quantile(delta, lo_q, axis=0)
            frame["delta_share_high"] = np.quantile(delta, hi_q, axis=0)
            # Called out only when the interval excludes zero: larger than its noise.
            frame["significant"] = (frame["delta_share_low"] > 0) | (frame["delta_share_high"] < 0)
        else:
            # No bootstrap, no measure of noise: no change is called larger than it.
            frame["significant"] = False
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
        frames.append(frame.sort_values(["rank_new", "feature"], kind="stable"))
    return pd.concat(frames, ignore_index=True)


def gate_change(flagged_old: bool, flagged_new: bool) -> str:
    """How a feature's gate moved: 'now flagged', 'cleared', 'flagged' or ''."""
    if flagged_new:
        return "flagged" if flagged_old else "now flagged"
    return "cleared" if flagged_old else ""


def rank_agreement(table: pd.DataFrame, output: str, k: int) -> dict:
    group = table[table["output"] == output]
    old, new = group["share_old"].to_numpy(), group["share_new"].to_numpy()
    return {"spearman": spearman(old, new), "kendall_tau": kendall_tau(old, new),
            "top_k": min(k, len(old)), "top_k_overlap": top_k_overlap(old, new, k)}


def comparison_findings(result: ComparisonResult, proxies: list[str]) -> list[str]:
    """Plain-words sentences: what fell, what rose, what gates changed, how scores moved."""
    lines: list[str] = []
    multi = len(result.new.outputs) > 1
    table = result.table
    has_intervals = "delta_share_low" in table.columns
    for output in result.new.outputs:
        group = table[table["output"] == output]
        where = f"Output '{output}': " if multi else ""
        for r in group.itertuples():
            noteworthy = abs(r.delta_share) >= 0.05 and (r.significant or not has_intervals)
            if r.feature in proxies or noteworthy:
                lines.append(where + _movement(r, has_intervals))
        leader_new = group.sort_values("rank_new").iloc[0]
        leader_old = group.sort_values("rank_old").iloc[0]
        if leader_new["feature"] != leader_old["feature"]:
            lines.append(f"{where}{leader_new['feature']} is now the strongest driver "
                         f"({leader_new['share_new']:.0%}), replacing {leader_old['feature']}.")
        agreement = result.overall[output]
        lines.append(
            f"{where}Rankings agree with Spearman {_fmt(agreement['spearman'])} and Kendall tau "
            f"{_fmt(agreement['kendall_tau'])}; {agreement['top_k_overlap']:.0%} of the old "
            f"top {agreement['top_k']} remain. Per row, the two models' contribution vectors "
            f"have median cosine {_fmt(agreement['cosine']['median'])}. Scores moved by "
            f"{agreement['score_change']['mean_abs']:.3g} on average (largest "
            f"{agreement['score_change']['max_abs']:.3g}).")
    for r in table[table["gate_changed"]].itertuples():
        state = ("passed its gate in the old model and fails it in the new one"
                 if r.flagged_new else
                 "was flagged by the old model and passes its gate in the new one")
        lines.append(f"{r.feature} {state}.")
    for inc in result.proxy_increases:
        lines.append(f"{inc['feature']}'s share grew by {inc['delta_share']:.1%}, more than "
                     f"the allowed {inc['margin']:.1%} (compare.max_proxy_share_increase).")
    return lines


def _movement(r, has_intervals: bool) -> str:
    verb = "fell" if r.delta_share < 0 else "rose"
    ci = ""
    if has_intervals:
        ci = (f" (change {r.delta_share:+.1%}, interval {r.delta_share_low:+.1%} to "
              f"{r.delta_share_high:+.1%})")
    noise = "; within noise" if has_intervals and not r.significant else ""
    return (f"{r.feature}'s share {verb} from {r.share_old:.0%} to {r.share_new:.0%}{ci}, rank "
            f"{r.rank_old} -> {r.rank_new}{noise}.")


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"
