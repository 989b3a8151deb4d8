#!/usr/bin/env python
"""Generate the synthetic ad-copy sample data and the two demo scorers.

Story
-----
Historically the best ads went through more revision cycles. A hidden "revision effort"
variable raised both an ad's quality *and* its length, so in the training extract
``copy_length`` is predictive of quality. ``scorer_v1`` is trained on that extract and
learns length as a proxy. ``scorer_v2`` is retrained on the resample ``sensaudit resample``
makes, where every copy_length bin has the same quality mix, so it has to rely on the real drivers
(``sentence_structure``, ``clarity``, ...). The evaluation extract comes from a campaign
where every ad got the same single review pass, so there revision effort is constant and
copy_length carries no information about quality: auditing the scorers on it exposes v1.

Everything is seeded and single-threaded, so running the script twice gives
byte-identical CSVs and identical sensitivity shares (the .pt2 zip metadata may differ).

Usage::

    python scripts/make_sample_data.py [--out sensaudit/sample/sample_data] [--seed 7]
        [--no-train-csv]

The script ends with an acceptance check on the *saved* programs (reloaded with
``torch.export.load``) and exits non-zero if the story does not hold.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

# The v2 training set is what `sensaudit resample` makes; run from a checkout without install.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sensaudit.resample import decorrelate  # noqa: E402

# Package data: `sensaudit demo` copies it out of the installed package.
SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sensaudit" / "sample" / "sample_data"

# Column order is part of the model contract: the scorers take raw values in this order.
FEATURES = [
    "copy_length",  # characters
    "word_count",  # words
    "avg_sentence_length",  # words per sentence
    "sentence_structure",  # rater score in [0, 1]
    "clarity",  # rater score in [0, 1]
    "readability",  # Flesch reading ease, 0..100
    "cta_present",  # 0/1
    "exclamation_count",  # count
    "brand_mention",  # 0/1
]
LABEL = "quality"  # 0/1: 1 = ad judged high quality

N_EVAL = 1500
N_TRAIN = 6000
N_LENGTH_BINS = 10  # quantile bins of copy_length used to de-correlate the v2 training set

# Strength of the hidden revision effort on quality (logit scale) in the training extract,
# and how tightly it drives copy_length. Large enough that length is the single best
# predictor in training, small enough that every length bin still has both classes,
# which the v2 rebalancing needs.
REVISION_ON_QUALITY = 2.5
REVISION_ON_LENGTH = 0.85  # correlation between revision effort and log copy_length
BASE_LOGIT = -0.2  # about 45% of ads are good
# Class-conditional shift (in latent SDs) of the two rater scores for good ads.
STRUCTURE_SHIFT = 0.9
CLARITY_SHIFT = 0.8

MAX_SIZE_KB = 600  # the sample ships in the repo and in every wheel: it must stay small


def set_determinism(seed: int) -> None:
    # Single thread + deterministic kernels: float reductions are then order-stable, so
    # trained weights (and hence the audit shares) are bit-identical across runs.
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


# --------------------------------------------------------------------------------------
# Data generation
# --------------------------------------------------------------------------------------


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def generate_extract(rng: np.random.Generator, n: int, revision_effort: bool) -> pd.DataFrame:
    """One extract of ``n`` ads.

    The label is drawn first and the copy features are drawn *given the label*
    (class-conditional, "label shift" style). That keeps the feature profile of a good ad
    the same at every length, which is exactly what makes rebalancing quality within
    copy_length bins remove the length signal completely (see ``decorrelate_length``).

    With ``revision_effort=True`` (training extract) a hidden effort variable raises both
    the chance that an ad is good and its copy length. With ``False`` (eval extract) every
    ad got the same single review pass: effort is constant, so copy_length is independent
    of quality.
    """
    # Hidden revision effort, standard normal; zero when every ad gets one review pass.
    effort = rng.standard_normal(n) if revision_effort else np.zeros(n)
    quality = rng.binomial(1, _sigmoid(BASE_LOGIT + REVISION_ON_QUALITY * effort))

    # copy_length: log-normal around ~150 characters. Same marginal in both extracts; in
    # the training extract its log is correlated (REVISION_ON_LENGTH) with effort.
    rho = REVISION_ON_LENGTH if revision_effort else 0.0
    z_len = rho * effort + np.sqrt(1.0 - rho**2) * rng.standard_normal(n)
    copy_length = np.clip(np.round(150.0 * np.exp(0.5 * z_len)), 20, 400).astype(int)

    # Characters per word varies with style (short punchy words vs. long technical ones,
    # URLs, hashtags), which keeps word_count only moderately collinear with copy_length.
    chars_per_word = np.clip(5.6 * np.exp(0.35 * rng.standard_normal(n)), 3.5, 10.0)
    word_count = np.maximum(3, np.round(copy_length / chars_per_word)).astype(int)

    # Everything below depends on quality (and on nothing length-related, except the
    # physical cap of sentence length at the ad's word count).
    q = quality.astype(float)

    # Good copy uses somewhat shorter sentences.
    avg_sentence_length = np.clip(rng.normal(14.0 - 0.8 * q, 4.0), 4.0, 35.0)
    avg_sentence_length = np.round(np.minimum(avg_sentence_length, word_count), 1)

    # Rater scores: latent normals (within-class correlation 0.3) shifted up for good ads,
    # squashed into (0, 1). These are the main real drivers of quality.
    z_struct = rng.standard_normal(n) + STRUCTURE_SHIFT * q
    z_clar = 0.3 * (z_struct - STRUCTURE_SHIFT * q) + np.sqrt(1 - 0.3**2) * rng.standard_normal(n)
    z_clar = z_clar + CLARITY_SHIFT * q
    sentence_structure = np.round(_sigmoid(0.9 * z_struct), 3)
    clarity = np.round(_sigmoid(0.9 * z_clar), 3)

    # Flesch reading ease: 206.835 - 1.015 * words/sentence - 84.6 * syllables/word.
    # Good copy picks slightly simpler words. Syllables/word is drawn independently of
    # characters/word on purpose: if it were tied to chars_per_word (= copy_length /
    # word_count), a model could use the length ratio to "explain away" readability noise,
    # and length would carry quality signal even in the eval extract.
    syllables_per_word = rng.normal(1.5 - 0.03 * q, 0.1)
    readability = 206.835 - 1.015 * avg_sentence_length - 84.6 * syllables_per_word
    readability = np.round(np.clip(readability, 0.0, 100.0), 1)

    cta_present = rng.binomial(1, 0.5 + 0.08 * q)
    exclamation_count = np.minimum(rng.poisson(1.0 - 0.2 * q), 6)
    brand_mention = rng.binomial(1, 0.45 + 0.05 * q)

    return pd.DataFrame(
        {
            "copy_length": copy_length,
            "word_count": word_count,
            "avg_sentence_length": avg_sentence_length,
            "sentence_structure": sentence_structure,
            "clarity": clarity,
            "readability": readability,
            "cta_present": cta_present,
            "exclamation_count": exclamation_count,
            "brand_mention": brand_mention,
            LABEL: quality,
        }
    )


def with_ids(df: pd.DataFrame, prefix: str) -> pd.DataFrame:
    ids = [f"{prefix}-{i:05d}" for i in range(1, len(df) + 1)]
    return pd.concat([pd.Series(ids, name="ad_id"), df], axis=1)


def decorrelate_length(df: pd.DataFrame) -> pd.DataFrame:
    """The rows ``sensaudit resample ad_copy_train.csv --proxy copy_length --label quality``
    keeps (the demo runs that command): every copy_length decile gets the extract's overall
    quality mix, each bin as large as its scarcer class allows.

    Because the features are drawn given quality, this makes copy_length (nearly) independent
    of (features, quality) jointly, not just of quality; only the within-bin spread and the
    sentence-length cap leave a trace. Plain rebalancing would not be enough if features and
    effort combined in one logistic model: the length effect conditional on the features is
    steeper than the marginal one, and v2 would still lean on length.
    """
    picked = decorrelate(df["copy_length"].to_numpy(dtype=float),
                         df[LABEL].to_numpy(dtype=float), bins=N_LENGTH_BINS)
    assert picked.rows is not None
    return df.iloc[picked.rows].reset_index(drop=True)


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------


class QualityScorer(nn.Module):
    """MLP on raw features. Standardisation lives inside as buffers, so input gradients
    (what sensaudit measures) are with respect to the raw, unit-bearing feature values."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("feature_mean", mean.clone())
        self.register_buffer("feature_std", std.clone())
        self.net = nn.Sequential(
            nn.Linear(len(FEATURES), 32),
            nn.Tanh(),
            nn.Linear(32, 16),
            nn.Tanh(),
            nn.Linear(16, 1),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.feature_mean) / self.feature_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Quality score in [0, 1], shape [rows, 1].
        return torch.sigmoid(self.logits(x))


def to_tensor(df: pd.DataFrame) -> torch.Tensor:
    return torch.tensor(df[FEATURES].to_numpy(dtype=np.float32))


def train_scorer(df: pd.DataFrame, seed: int, epochs: int = 300) -> QualityScorer:
    x = to_tensor(df)
    y = torch.tensor(df[LABEL].to_numpy(dtype=np.float32)).unsqueeze(1)
    # Re-seed per model so each scorer's init does not depend on what ran before it.
    torch.manual_seed(seed)
    model = QualityScorer(x.mean(0), x.std(0))
    # Full-batch Adam: a few thousand rows fit in one step and there is no shuffling order
    # to reproduce. The L2 penalty (Adam's coupled weight_decay) is what makes training
    # converge to a stable, smooth fit instead of slowly overfitting noise: without it the
    # net keeps bending along copy_length/word_count and v2's length gradient creeps up.
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-2)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(epochs):
        opt.zero_grad()
        loss = loss_fn(model.logits(x), y)
        loss.backward()
        opt.step()
    return model.eval()


def export_scorer(model: QualityScorer, path: Path) -> None:
    example = torch.zeros(8, len(FEATURES))
    ep = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("rows")},))
    # The input order travels with the model, so sensaudit matches data columns by name.
    torch.export.save(ep, str(path),
                      extra_files={"sensaudit.json": json.dumps({"features": FEATURES})})


# --------------------------------------------------------------------------------------
# Acceptance checks (on the saved artefacts, the way sensaudit will see them)
# --------------------------------------------------------------------------------------


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    # Mann-Whitney U with average ranks for ties; avoids an sklearn dependency.
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def sensitivity_shares(module: torch.nn.Module, x: torch.Tensor) -> pd.Series:
    """share_j = std_j * mean|d score / d x_j| normalised to sum to 1."""
    x = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(module(x).sum(), x)
    mean_abs = grad.abs().mean(0).double().numpy()
    std = x.detach().double().std(0, unbiased=True).numpy()
    scaled = std * mean_abs
    return pd.Series(scaled / scaled.sum(), index=FEATURES)


def acceptance(
    out: Path, eval_df: pd.DataFrame, in_memory: dict[str, QualityScorer]
) -> tuple[bool, pd.DataFrame, dict[str, float]]:
    """Audit the saved programs on the eval extract; returns (passed, shares, aucs)."""
    x = to_tensor(eval_df)
    y = eval_df[LABEL].to_numpy()
    shares, aucs, ok = {}, {}, True

    for name, model in in_memory.items():
        module = torch.export.load(str(out / f"{name}.pt2")).module()
        # The audit feeds arbitrary batch sizes; make sure the dynamic dim really works
        # (1 row is the classic case a specialised export gets wrong).
        for rows in (1, 5000):
            probe = module(torch.zeros(rows, len(FEATURES)))
            if tuple(probe.shape) != (rows, 1):
                print(f"FAIL {name}: output shape {tuple(probe.shape)} for {rows} rows")
                ok = False
        with torch.no_grad():
            scores = module(x)
            if not torch.allclose(scores, model(x), atol=1e-6):
                print(f"FAIL {name}: saved program disagrees with the trained model")
                ok = False
        aucs[name] = auc(scores.squeeze(1).numpy(), y)
        shares[name] = sensitivity_shares(module, x)

    table = pd.DataFrame(shares)
    for name in in_memory:
        table[f"{name[-2:]}_rank"] = table[name].rank(ascending=False, method="first").astype(int)
    print("\nSensitivity shares on the eval extract (std * mean|grad|, normalised):")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"\nEval AUC: scorer_v1 {aucs['scorer_v1']:.4f}   scorer_v2 {aucs['scorer_v2']:.4f}")

    def check(cond: bool, msg: str) -> None:
        nonlocal ok
        print(f"  [{'ok' if cond else 'FAIL'}] {msg}")
        ok = ok and bool(cond)

    s1, s2 = table["scorer_v1"], table["scorer_v2"]
    print("\nAcceptance:")
    check(s1["copy_length"] >= 0.35, f"v1 copy_length share {s1['copy_length']:.4f} >= 0.35")
    check(s1.idxmax() == "copy_length", f"v1 top feature is copy_length ({s1.idxmax()})")
    check(s2["copy_length"] <= 0.06, f"v2 copy_length share {s2['copy_length']:.4f} <= 0.06")
    both = s2["sentence_structure"] + s2["clarity"]
    check(both >= 0.40, f"v2 sentence_structure + clarity share {both:.4f} >= 0.40")
    check(
        s2.idxmax() in ("sentence_structure", "clarity"),
        f"v2 top feature is sentence_structure or clarity ({s2.idxmax()})",
    )
    check(aucs["scorer_v2"] > aucs["scorer_v1"], "v2 eval AUC beats v1 (v1 learned a proxy)")
    check(aucs["scorer_v2"] >= 0.70, f"v2 eval AUC {aucs['scorer_v2']:.4f} >= 0.70")
    corr = eval_df["copy_length"].corr(eval_df[LABEL])
    check(abs(corr) < 0.06, f"eval corr(copy_length, quality) {corr:+.4f} is ~0")
    return ok, table, aucs


# --------------------------------------------------------------------------------------


def csv_roundtrip(df: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Render ``df`` as CSV text and parse it back.

    Models are trained and audited on exactly what is on disk (parsed decimals), not on
    the unrounded in-memory floats, so anyone re-auditing from the CSV gets our numbers.
    A fixed "\\n" line terminator keeps the bytes (and hashes) platform-independent.
    """
    text = df.to_csv(index=False, lineterminator="\n")
    return text, pd.read_csv(io.StringIO(text))


README = """\
# sensaudit sample data

Synthetic ad-copy data and two trained quality scorers for the sensaudit demo and tests.
Generated by `scripts/make_sample_data.py` in the sensaudit repository (seed {seed});
regenerate there with

    python scripts/make_sample_data.py

which writes into `sensaudit/sample/sample_data/`: package data, shipped in the wheel, that
`sensaudit demo` copies out beside the configs that audit it.

The run is deterministic (seeded, single-threaded, deterministic kernels): the CSVs are
byte-identical and the audit shares identical across runs; the `.pt2` zip metadata may
differ. The script ends with an acceptance audit and exits non-zero if it fails.

## Files

- `ad_copy_eval.csv`: {n_eval} ads, the evaluation extract the audit runs on.
- `ad_copy_train.csv`: {n_train} ads, the (biased) training extract `scorer_v1` was fit on.
- `scorer_v1.pt2`: MLP 9-32-16-1 (tanh) trained on the training extract; leans on
  `copy_length`.
- `scorer_v2.pt2`: same architecture retrained on a {n_balanced}-row resample of the
  training extract in which each of {n_bins} copy_length quantile bins has the extract's
  overall quality mix (`sensaudit resample ad_copy_train.csv --proxy copy_length --label
  quality`, as the demo runs it); relies on `sentence_structure` and `clarity`.

Both scorers are `torch.export` programs: `torch.export.load(path).module()` takes a
float32 tensor `[rows, 9]` of RAW feature values in the column order below (`rows` is
dynamic) and returns a quality score in [0, 1] (sigmoid of a logit), shape `[rows, 1]`.
The standardisation (training mean/std) is inside the model as buffers, so input
gradients are with respect to raw feature units.

## Columns

`ad_id` (`ad-00001`, ...; `tr-00001`, ... in the training extract) comes first, then the
nine features in model-input order, then the label:

| column | meaning, unit / range |
|---|---|
| `copy_length` | ad copy length in characters, int, 20..400 |
| `word_count` | words, int (correlates with copy_length, r = {wc_corr:.2f} in eval) |
| `avg_sentence_length` | words per sentence, ~3..35 |
| `sentence_structure` | rater score in [0, 1] |
| `clarity` | rater score in [0, 1] |
| `readability` | Flesch reading ease, 0..100 (higher = easier) |
| `cta_present` | 0/1, the copy has a call to action |
| `exclamation_count` | number of "!", int 0..6 |
| `brand_mention` | 0/1, the brand is named in the copy |
| `quality` | label, 0/1: 1 = ad judged high quality |

How the label relates to the features: the label is drawn first and the features given
the label (good ads score higher on sentence_structure and clarity, and a little better on
readability, sentence length, call to action, fewer "!", brand mention). copy_length and
word_count carry no information about quality, except through revision effort in the
training extract.

## The story

Historically the best ads went through more revision cycles: a hidden revision-effort
variable raised both the chance that an ad was good and its length, so in the training
extract length predicts quality (corr {train_corr:+.2f}). `scorer_v1` learned length as a
proxy. The eval extract comes from a campaign in which every ad got a single review pass,
so length is unrelated to quality there (corr {eval_corr:+.2f}).

Sensitivity audit on the eval extract (share of std * mean |d score / d x|):
`scorer_v1` puts {v1_share:.2f} of its sensitivity on copy_length (rank 1);
`scorer_v2` puts {v2_share:.2f} there and {v2_sc:.2f} on sentence_structure + clarity.
Eval AUC: v1 {v1_auc:.3f}, v2 {v2_auc:.3f}.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=SAMPLE_DATA,
                        help="where to write (default: sensaudit/sample/sample_data/ of "
                             "this checkout)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--no-train-csv",
        action="store_true",
        help="do not write ad_copy_train.csv (the scorers are still trained on it)",
    )
    args = parser.parse_args(argv)

    set_determinism(args.seed)
    rng = np.random.default_rng(args.seed)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    # Draw order matters for reproducibility: train extract, then eval extract.
    train_text, train_df = csv_roundtrip(with_ids(generate_extract(rng, N_TRAIN, True), "tr"))
    eval_text, eval_df = csv_roundtrip(with_ids(generate_extract(rng, N_EVAL, False), "ad"))
    balanced_df = decorrelate_length(train_df)

    files = {"ad_copy_eval.csv": eval_text}
    train_path = out / "ad_copy_train.csv"
    if args.no_train_csv:
        train_path.unlink(missing_ok=True)
    else:
        files["ad_copy_train.csv"] = train_text
    for name, text in files.items():
        (out / name).write_bytes(text.encode("utf-8"))

    train_corr = train_df["copy_length"].corr(train_df[LABEL])
    bal_corr = balanced_df["copy_length"].corr(balanced_df[LABEL])
    eval_corr = eval_df["copy_length"].corr(eval_df[LABEL])
    wc_corr = eval_df["copy_length"].corr(eval_df["word_count"])
    print(
        f"rows: train {len(train_df)}, length-balanced resample {len(balanced_df)}, "
        f"eval {len(eval_df)}\n"
        f"corr(copy_length, quality): train {train_corr:+.3f}  balanced {bal_corr:+.3f}  "
        f"eval {eval_corr:+.3f};  corr(copy_length, word_count) eval {wc_corr:.3f}"
    )

    models = {
        "scorer_v1": train_scorer(train_df, seed=args.seed + 1),
        "scorer_v2": train_scorer(balanced_df, seed=args.seed + 2),
    }
    for name, model in models.items():
        export_scorer(model, out / f"{name}.pt2")

    # Audit from the file on disk, exactly as a user of sample_data/ would.
    ok, shares, aucs = acceptance(out, pd.read_csv(out / "ad_copy_eval.csv"), models)

    (out / "README.md").write_text(
        README.format(
            n_eval=N_EVAL,
            n_train=N_TRAIN,
            n_balanced=len(balanced_df),
            n_bins=N_LENGTH_BINS,
            seed=args.seed,
            wc_corr=wc_corr,
            train_corr=train_corr,
            eval_corr=eval_corr,
            v1_share=shares.loc["copy_length", "scorer_v1"],
            v2_share=shares.loc["copy_length", "scorer_v2"],
            v2_sc=shares.loc[["sentence_structure", "clarity"], "scorer_v2"].sum(),
            v1_auc=aucs["scorer_v1"],
            v2_auc=aucs["scorer_v2"],
        ),
        encoding="utf-8",
    )

    total_kb = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 1024
    print(f"\nWrote {out}/ ({total_kb:.0f} KB):")
    for p in sorted(out.iterdir()):
        print(f"  {p.name:22s} {p.stat().st_size / 1024:7.1f} KB")
    for name, text in files.items():
        print(f"  sha256 {name}: {hashlib.sha256(text.encode('utf-8')).hexdigest()}")
    if total_kb >= MAX_SIZE_KB:
        print(f"FAIL: {out}/ is {total_kb:.0f} KB (limit {MAX_SIZE_KB} KB); try --no-train-csv")
        ok = False

    if not ok:
        print("\nACCEPTANCE FAILED", file=sys.stderr)
        return 1
    print("\nAll acceptance checks passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
