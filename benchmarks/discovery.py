"""Does the audit find a proxy nobody declared? Recall and false alarms of the ``suspects``
check (sensaudit/checks/suspects.py) with its default settings, on models this project did not
design for it.

Data: scikit-learn's bundled data sets (no download): breast cancer (0/1), diabetes
(regression), wine (class 0 against the rest) and digits (even against odd; pixels that are
zero in 95% of images dropped). Each is split in half, seeded: a model is trained on one half
and audited on the other, with the label and no proxy declared, and with the training half as
the audit's training rows (``data.train``: a user auditing a model has them; ``--without-train``
audits from the audited rows alone).

Models: two MLP shapes (``tanh16``: one hidden layer of 16, tanh; ``relu32x16``: two hidden
layers, ReLU) trained by this script, full batch with AdamW, seeded, on standardized inputs
(the standardizing is part of the model); a 0/1 label is scored through a sigmoid, a
continuous one in its own units.

One extra column per run:

- **planted** (the case to find): it tracks the label in the training rows only, and is
  independent of it in the audited rows, at strengths 0.6, 0.75 and 0.9 and in three shapes:
  ``linear`` (strength x standardized label + noise: correlation about the strength),
  ``threshold`` (a 0/1 flag equal to "label above its median" in a strength fraction of rows,
  random elsewhere), ``categorical`` (4 codes, the label's quartile under a shuffled coding in a
  strength fraction of rows, random elsewhere).
- controls: **none** (no extra column), **duplicate** (a copy of the genuine feature most
  correlated with the label), **strong** (a genuine strong feature: 0.8 x standardized label +
  noise in training and audited rows alike), **noise** (pure noise in both).

A genuine feature (the data set's own, a duplicate, a strong one) flagged is a false alarm. A
noise column the model leans on is reliance without evidence, as a planted one is on the
audited rows; how the rule treats it is shown by its share. The planted column's share is its
share of the model's sensitivity on the audited rows (suspects.csv's ``share``).

Tuning and held-out parts, for the rule calibrated next (issue 21): seed 0 of breast cancer,
diabetes and wine is the tuning part; other seeds, and digits at every seed, are held out.

    PYTHONPATH=. python benchmarks/discovery.py            # 312 audits, about 3 minutes on 2 cores
    PYTHONPATH=. python benchmarks/discovery.py --quick    # 40 audits, under a minute
    PYTHONPATH=. python benchmarks/discovery.py --out runs.csv   # every run's figures too
    PYTHONPATH=. python benchmarks/discovery.py --without-train  # no data.train

Needs scikit-learn (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from sensaudit import AuditSettings, audit_frame  # noqa: E402

SHAPES = ("linear", "threshold", "categorical")
STRENGTHS = (0.6, 0.75, 0.9)
CONTROLS = ("none", "duplicate", "strong", "noise")
MODELS = ("tanh16", "relu32x16")
TUNING_DATASETS = ("breast_cancer", "diabetes", "wine")
TUNING_SEEDS = (0,)
SHARE_BINS = ((0.0, 0.05, "<5%"), (0.05, 0.10, "5-10%"), (0.10, 0.20, "10-20%"),
              (0.20, math.inf, ">=20%"))
STEPS = 300


@dataclass(frozen=True)
class Dataset:
    name: str
    x: pd.DataFrame
    y: np.ndarray
    binary: bool


def load_datasets() -> list[Dataset]:
    """The four bundled data sets, features named without spaces, labels as float."""
    from sklearn import datasets as sk

    def frame(bunch, columns=None) -> pd.DataFrame:
        names = [str(n).replace(" ", "_") for n in (columns or bunch.feature_names)]
        return pd.DataFrame(np.asarray(bunch.data, dtype=float), columns=names)

    cancer, diabetes, wine, digits = (sk.load_breast_cancer(), sk.load_diabetes(),
                                      sk.load_wine(), sk.load_digits())
    pixels = frame(digits, [f"px{i}" for i in range(digits.data.shape[1])])
    pixels = pixels.loc[:, (pixels != 0).mean() >= 0.05]  # nearly always blank: dropped
    return [
        Dataset("breast_cancer", frame(cancer), cancer.target.astype(float), True),
        Dataset("diabetes", frame(diabetes), diabetes.target.astype(float), False),
        Dataset("wine", frame(wine), (wine.target == 0).astype(float), True),
        Dataset("digits", pixels, (digits.target % 2 == 0).astype(float), True),
    ]


def halves(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of the rows: training half, audited half."""
    order = np.random.default_rng(seed).permutation(rows)
    return np.sort(order[: rows // 2]), np.sort(order[rows // 2:])


def plant(y_train: np.ndarray, audit_rows: int, shape: str, strength: float,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A column that tracks the label in the training rows (``y_train``) at ``strength`` and
    is independent of it in the ``audit_rows`` audited rows, with the same distribution
    there. Shapes: linear, threshold, categorical (see the module's docstring)."""
    n = len(y_train)
    if shape == "linear":
        z = (y_train - y_train.mean()) / y_train.std()
        train = strength * z + math.sqrt(1 - strength**2) * rng.normal(size=n)
        audit = rng.normal(size=audit_rows)
        return train * 10 + 50, audit * 10 + 50
    keep = rng.random(n) < strength  # rows where the column follows the label
    if shape == "threshold":
        above = y_train > np.median(y_train)
        if above.all() or not above.any():  # a 0/1 label whose median is one of its values
            above = y_train >= np.median(y_train)
        above = above.astype(float)
        rate = above.mean()
        train = np.where(keep, above, (rng.random(n) < rate).astype(float))
        return train, (rng.random(audit_rows) < rate).astype(float)
    if shape == "categorical":
        # The label's quartile (ties broken at random, so a 0/1 label fills all four), under a
        # coding that is not in the label's order.
        ranks = np.lexsort((rng.random(n), y_train)).argsort()
        quartile = ranks * 4 // n
        coded = np.array([2, 0, 3, 1])[quartile].astype(float)
        train = np.where(keep, coded, rng.integers(0, 4, n).astype(float))
        return train, rng.integers(0, 4, audit_rows).astype(float)
    raise ValueError(f"unknown shape {shape!r}")


class Scorer(nn.Module):
    """net((x - mean) / std): through a sigmoid for a 0/1 label, else back in the label's
    units."""

    def __init__(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, binary: bool):
        super().__init__()
        self.net, self.binary = net, binary
        self.register_buffer("mean", x.mean(0))
        self.register_buffer("std", x.std(0).clamp_min(1e-12))
        self.register_buffer("y_mean", torch.zeros(()) if binary else y.mean())
        self.register_buffer("y_std", torch.ones(()) if binary else y.std())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.logits(x)
        return torch.sigmoid(out) if self.binary else out * self.y_std + self.y_mean


def train(x: np.ndarray, y: np.ndarray, binary: bool, shape: str, seed: int) -> Scorer:
    """Full-batch AdamW on three quarters of the training rows, keeping the weights with the
    lowest loss on the last quarter (early stopping), as a team validates a model before
    deploying it: without it, the regression models scored their held-out rows worse than the
    label's mean (median squared error 1.01 x the label's variance), and a "genuine" feature of
    a model with no skill is no test of a proxy rule. The planted column tracks the label in
    the validation rows too (the leak is in all of the team's historic data)."""
    torch.manual_seed(seed)
    order = np.random.default_rng(seed).permutation(len(y))
    fit, check = order[: len(y) * 3 // 4], order[len(y) * 3 // 4:]
    xt, yt = torch.tensor(x), torch.tensor(y)[:, None]
    width = x.shape[1]
    net = (nn.Sequential(nn.Linear(width, 16), nn.Tanh(), nn.Linear(16, 1)) if shape == "tanh16"
           else nn.Sequential(nn.Linear(width, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                              nn.Linear(16, 1))).double()
    model = Scorer(net, xt[fit], yt[fit], binary)
    target = yt if binary else (yt - model.y_mean) / model.y_std
    loss = nn.BCEWithLogitsLoss() if binary else nn.MSELoss()
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.01, weight_decay=0.01)
    best, kept = math.inf, copy.deepcopy(net.state_dict())
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss(model.logits(xt[fit]), target[fit]).backward()
        optimizer.step()
        with torch.no_grad():
            held = float(loss(model.logits(xt[check]), target[check]))
        if held < best:
            best, kept = held, copy.deepcopy(net.state_dict())
    net.load_state_dict(kept)
    return model.eval()


def tie(column: np.ndarray, y: np.ndarray, shape: str) -> float:
    """How closely the column tracks the label: the correlation ratio (the label's spread
    explained by the column's codes, square-rooted) for a categorical column, whose codes are
    not in the label's order, else Pearson's correlation; 0 for a constant column."""
    if column.std() == 0 or y.std() == 0:
        return 0.0
    if shape != "categorical":
        return float(np.corrcoef(column, y)[0, 1])
    means = pd.Series(y).groupby(column).transform("mean").to_numpy()
    return float(math.sqrt(means.var() / y.var()))


@dataclass(frozen=True)
class Condition:
    kind: str  # "planted" or a control
    shape: str = ""
    strength: float = math.nan

    @property
    def label(self) -> str:
        return f"planted {self.shape} {self.strength:g}" if self.kind == "planted" else self.kind


def conditions(quick: bool) -> list[Condition]:
    strengths = (0.6, 0.9) if quick else STRENGTHS
    return ([Condition("planted", s, k) for s in SHAPES for k in strengths]
            + [Condition(c) for c in CONTROLS])


def with_extra(data: Dataset, train_rows: np.ndarray, audit_rows: np.ndarray,
               condition: Condition, rng: np.random.Generator
               ) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """Training and audited frames with the condition's extra column, and its name."""
    x_train = data.x.iloc[train_rows].reset_index(drop=True)
    x_audit = data.x.iloc[audit_rows].reset_index(drop=True)
    y_train, y_audit = data.y[train_rows], data.y[audit_rows]
    kind = condition.kind
    if kind == "none":
        return x_train, x_audit, None
    if kind == "planted":
        name = "planted"
        train_col, audit_col = plant(y_train, len(audit_rows), condition.shape,
                                     condition.strength, rng)
    elif kind == "duplicate":
        best = x_train.corrwith(pd.Series(y_train)).abs().idxmax()
        name = f"{best}_copy"
        train_col, audit_col = x_train[best].to_numpy(), x_audit[best].to_numpy()
    elif kind == "strong":
        name = "strong"
        mean, std = y_train.mean(), y_train.std()
        train_col, audit_col = (0.8 * (y - mean) / std + 0.6 * rng.normal(size=len(y))
                                for y in (y_train, y_audit))
    elif kind == "noise":
        name = "noise"
        train_col, audit_col = rng.normal(size=len(y_train)), rng.normal(size=len(y_audit))
    else:
        raise ValueError(f"unknown condition {kind!r}")
    return x_train.assign(**{name: train_col}), x_audit.assign(**{name: audit_col}), name


def run_one(data: Dataset, seed: int, model_shape: str, condition: Condition,
            with_train: bool = True) -> dict:
    train_rows, audit_rows = halves(len(data.y), seed)
    # One stream per (data set, seed, condition): the models see the same columns.
    rng = np.random.default_rng([seed, sum(map(ord, data.name + condition.label))])
    x_train, x_audit, extra = with_extra(data, train_rows, audit_rows, condition, rng)
    y_train, y_audit = data.y[train_rows], data.y[audit_rows]
    started = time.perf_counter()
    model = train(x_train.to_numpy(), y_train, data.binary, model_shape, seed)
    trained = time.perf_counter()
    frame = x_audit.assign(label=y_audit)
    # The training rows as a user has them (data.train): the audit tests whether each tie to
    # the label they show holds on the audited rows.
    trained_on = x_train.assign(label=y_train) if with_train else None
    result = audit_frame(model, frame, label="label", settings=AuditSettings(),
                         train=trained_on)
    audited = time.perf_counter()
    check = next(c for c in result.checks if c.check == "suspects")
    table = check.tables["suspects.csv"].set_index("feature")
    flagged = [s["feature"] for s in check.summary["suspects"]]
    # Suspects that fail the audit with the default audit.fail_on_suspects (a tie to the label
    # that fell from the training rows); the others are warnings.
    gated = [g.subject for g in result.gates.flags if g.check == "suspects"]
    # Candidates the audit says it cannot judge on these rows: a warning, not a suspect.
    unjudged = [s["feature"] for s in check.summary["unjudged_candidates"]]
    # Confirmed, but the label follows it on these rows: over-relied, a warning, not a suspect.
    over = [s["feature"] for s in check.summary["over_relied"]]
    part = ("tuning" if data.name in TUNING_DATASETS and seed in TUNING_SEEDS else "held-out")
    record = {"dataset": data.name, "seed": seed, "model": model_shape,
              "condition": condition.kind, "shape": condition.shape,
              "strength": condition.strength, "part": part, "extra": extra or "",
              "extra_share": math.nan, "extra_evidence_high": math.nan,
              "extra_flagged": False, "train_corr": math.nan, "audit_corr": math.nan,
              "genuine_flagged": ";".join(f for f in flagged if f != extra
                                          or condition.kind in ("duplicate", "strong")),
              "extra_unjudged": extra is not None and extra in unjudged,
              "genuine_unjudged": ";".join(f for f in unjudged if f != extra
                                           or condition.kind in ("duplicate", "strong")),
              "extra_over_relied": extra is not None and extra in over,
              "genuine_gated": ";".join(f for f in gated if f != extra
                                        or condition.kind in ("duplicate", "strong")),
              "genuine_over_relied": ";".join(f for f in over if f != extra
                                              or condition.kind in ("duplicate", "strong")),
              "suspects": len(flagged), "rows_trained": len(train_rows),
              "rows_audited": len(audit_rows), "features": x_audit.shape[1],
              "train_s": trained - started, "audit_s": audited - trained}
    if extra is not None:
        record.update(extra_share=float(table.loc[extra, "share"]),
                      extra_evidence_high=float(table.loc[extra, "evidence_high"]),
                      extra_flagged=extra in flagged,
                      train_corr=tie(x_train[extra].to_numpy(), y_train, condition.shape),
                      audit_corr=tie(x_audit[extra].to_numpy(), y_audit, condition.shape))
    return record


def grid(quick: bool, seeds: tuple[int, ...] = (0, 1, 2)
         ) -> Iterator[tuple[Dataset, int, str, Condition]]:
    seeds = seeds[:1] if quick else seeds
    models = MODELS[:1] if quick else MODELS
    for data in load_datasets():
        for seed in seeds:
            for model_shape in models:
                for condition in conditions(quick):
                    yield data, seed, model_shape, condition


# --- the tables --------------------------------------------------------------------------------

def share_bin(share: float) -> str:
    return next(name for low, high, name in SHARE_BINS if low <= share < high)


def fraction(hits: int, total: int) -> str:
    return f"{hits}/{total} ({hits / total:.0%})" if total else "-"


def by_part(frame: pd.DataFrame, rows: pd.Series, hit: pd.Series) -> list[str]:
    """found/total in each part, then all runs together."""
    cells = []
    for part in ("tuning", "held-out", None):
        chosen = rows if part is None else rows & (frame["part"] == part)
        cells.append(fraction(int((hit & chosen).sum()), int(chosen.sum())))
    return cells


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def report(runs: pd.DataFrame, seconds: float) -> str:
    parts = ["tuning", "held-out", "all"]
    planted = runs["condition"] == "planted"
    bins = runs["extra_share"].map(lambda s: share_bin(s) if math.isfinite(s) else "")
    flagged = runs["extra_flagged"].astype(bool)
    out = ["Planted column found (recall), by its share of the model's sensitivity on the "
           "audited rows:", ""]
    out.append(markdown(["planted share", *parts], [
        [name, *by_part(runs, planted & (bins == name), flagged)]
        for _, _, name in SHARE_BINS] + [["any", *by_part(runs, planted, flagged)]]))
    unjudged = runs["extra_unjudged"].astype(bool) & ~flagged
    big = planted & runs["extra_share"].ge(0.10)
    out += ["", "Planted columns with a share of 10% or more that were not found: how many the "
            "audit named as candidates it cannot judge on its rows (a warning with the test's "
            "power), by data set:", ""]
    out.append(markdown(["data set", "audited rows", *parts], [
        [name, f"{int(runs.loc[runs['dataset'] == name, 'rows_audited'].median()):,}",
         *by_part(runs, big & ~flagged & (runs["dataset"] == name), unjudged)]
        for name in sorted(runs.loc[big & ~flagged, "dataset"].unique())]))
    out += ["", "Planted column found, by shape and training strength (median share; median "
            "tie to the label in training / audited rows: correlation, for categorical the "
            "correlation ratio):", ""]
    body = []
    for shape in SHAPES:
        for strength in sorted(runs.loc[planted, "strength"].unique()):
            rows = planted & (runs["shape"] == shape) & (runs["strength"] == strength)
            chosen = runs[rows]
            body.append([f"{shape} {strength:g}",
                         f"{chosen['extra_share'].median():.1%}",
                         f"{chosen['train_corr'].median():.2f} / "
                         f"{chosen['audit_corr'].median():.2f}",
                         *by_part(runs, rows, flagged)])
    out.append(markdown(["planted", "share", "tie train / audit", *parts], body))
    genuine = runs["genuine_flagged"] != ""
    out += ["", "False alarms: runs with a genuine feature flagged (the data set's own, a "
            "duplicate, a strong one):", ""]
    body = [[kind, *by_part(runs, runs["condition"] == kind, genuine)]
            for kind in ("planted", "none", "duplicate", "strong")]
    body.append(["every run", *by_part(runs, runs["condition"] != "", genuine)])
    out.append(markdown(["runs", *parts], body))
    named = sorted({f for cell in runs.loc[genuine, "genuine_flagged"] for f in cell.split(";")})
    out.append("")
    out.append("Genuine features flagged: " + (", ".join(named) if named else "none"))
    gated = runs["genuine_gated"].fillna("") != ""
    named = sorted({f for cell in runs.loc[gated, "genuine_gated"] for f in cell.split(";")})
    out += ["", "Runs where a genuine feature failed the audit (by default a suspect fails it "
            "when its tie to the label fell from the training rows; the others are warnings): "
            f"{fraction(int(gated.sum()), len(runs))}"
            + (f" ({', '.join(named)})" if named else "")]
    said = runs["genuine_unjudged"].fillna("") != ""
    named = sorted({f for cell in runs.loc[said, "genuine_unjudged"] for f in cell.split(";")})
    out += ["", "Runs where a genuine feature was named as a candidate the audit cannot judge "
            f"(a warning, not a suspect): {fraction(int(said.sum()), len(runs))}"
            + (f" ({', '.join(named)})" if named else "")]
    said = runs["genuine_over_relied"].fillna("") != ""
    named = sorted({f for cell in runs.loc[said, "genuine_over_relied"] for f in cell.split(";")})
    over = runs["extra_over_relied"].astype(bool)
    planted_over = fraction(int((planted & over).sum()), int(planted.sum()))
    out += ["", "Runs where a genuine feature was named over-relied (the model does better "
            "without it, but the label follows it on the audited rows, or its tie to the label "
            "did not fall from the training rows: a warning, not a suspect): "
            f"{fraction(int(said.sum()), len(runs))}"
            + (f" ({', '.join(named)})" if named else "")
            + f"; planted columns named over-relied: {planted_over}"]
    noise = runs["condition"] == "noise"
    out += ["", "Noise column (no tie to the label anywhere) flagged, by its share:", ""]
    out.append(markdown(["noise share", *parts], [
        [name, *by_part(runs, noise & (bins == name), flagged)]
        for _, _, name in SHARE_BINS if (noise & (bins == name)).any()]))
    out += ["", f"{len(runs)} audits in {seconds:.0f} s: training {runs['train_s'].sum():.0f} s "
            f"(median {runs['train_s'].median():.2f} s), auditing {runs['audit_s'].sum():.0f} s "
            f"(median {runs['audit_s'].median():.2f} s); audited rows per run "
            f"{runs['rows_audited'].min()}-{runs['rows_audited'].max()}, features "
            f"{runs['features'].min()}-{runs['features'].max()}."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="seed 0, one model shape, strengths 0.6 and 0.9 (40 audits)")
    parser.add_argument("--out", type=Path, help="write every run's figures to this CSV")
    parser.add_argument("--without-train", action="store_true",
                        help="audit without the training rows (no data.train): the audited "
                             "rows' own signals alone")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="the seeds (splits, planted columns, training); seeds 3-5 were "
                             "first run after the power rule was set, seeds 6-8 after the "
                             "over-reliance split, seeds 9-11 after the own-part averaging, "
                             "seeds 12-14 after the contrast's gap, seeds 18-20 after the "
                             "training-tie test: fresh held-out parts")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists():
        parser.error(f"{args.out} exists; it is not overwritten")
    torch.set_num_threads(1)  # tiny full-batch models: threads only fight over the cores
    started = time.perf_counter()
    runs = pd.DataFrame([run_one(*cell, with_train=not args.without_train)
                         for cell in grid(args.quick, tuple(args.seeds))])
    print(report(runs, time.perf_counter() - started))
    if args.out is not None:
        runs.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
