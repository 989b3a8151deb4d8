"""One-hot groups (``audit.groups: {region: {kind: one_hot, columns: [...]}}``): what switching
a row's level does to its score.

A gradient with respect to a 0/1 column is the slope at a value the column never takes
between 0 and 1, so it says little about the categorical. This check sets each row's group
columns to each level in turn (column k 1, the others 0) and reports the exact mean score
change, per output, from each current level to each level (rows whose columns are not exactly
one-hot count under ``(other)``) and from all rows. For a linear scorer, switching a row from
level a to level b changes its score by exactly w_b - w_a. Sums only: partial results merge.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from sensaudit.checks.base import Check, CheckResult, ModelContext, Ranking, ReplayChunk
from sensaudit.core.errors import ConfigError, did_you_mean
from sensaudit.core.perturb import level_switches
from sensaudit.settings.checks import FeatureGroup
from sensaudit.settings.sections import AuditSettings

OTHER = "(other)"
ANY = "(any)"


class OneHotLevels(Check):
    name = "one_hot_levels"
    judges_the_model = True
    config_key = "groups"
    replays = True

    def __init__(self, groups: list[FeatureGroup]):
        self.groups = groups
        # Per group: [outputs, from level (levels + other), to level] sums of score changes,
        # and [from level] row counts.
        self.sums: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []

    @classmethod
    def check_names(cls, settings: AuditSettings, features: tuple[str, ...]) -> None:
        """Every group (audit.groups, one-hot or plain) names audited features, each in one
        group, and is not named like a feature."""
        known = ", ".join(features)
        owner: dict[str, str] = {}
        for group in settings.groups:
            key = f"audit.groups.{group.name}"
            if group.name in features:
                raise ConfigError(f"{key}: the group's name is also a feature's; name the "
                                  "group differently")
            for column in group.columns:
                if column not in features:
                    raise ConfigError(f"{key} lists '{column}', which is not an audited "
                                      f"feature{did_you_mean(column, features)} "
                                      f"(features: {known})")
                if column in owner:
                    raise ConfigError(f"{key} lists '{column}', which is in group "
                                      f"'{owner[column]}' already")
                owner[column] = group.name

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> OneHotLevels | None:
        groups = [g for g in settings.groups if g.kind == "one_hot"]
        return cls(groups) if groups else None

    def replay(self, chunk: ReplayChunk, context: ModelContext) -> None:
        m = len(context.outputs)
        if not self.sums:
            self.sums = [np.zeros((m, len(g.columns) + 1, len(g.columns))) for g in self.groups]
            self.counts = [np.zeros(len(g.columns) + 1, dtype=np.int64) for g in self.groups]
        kept = chunk.finite.nonzero().flatten()
        if not len(kept):
            return
        x = chunk.x[kept.to(chunk.x.device)]
        for g, group in enumerate(self.groups):
            columns = [context.features.index(c) for c in group.columns]
            _, change = level_switches(context.model, x, columns)  # [rows, outputs, levels]
            levels = len(columns)
            values = x[:, columns]
            exact = ((values == 0) | (values == 1)).all(1) & (values.sum(1) == 1)
            current = torch.where(exact, values.argmax(1), torch.full_like(exact, levels,
                                                                           dtype=torch.long))
            current = current.cpu()
            one_hot = torch.nn.functional.one_hot(current, levels + 1).double()  # [rows, L+1]
            self.sums[g] += torch.einsum("rf,rot->oft", one_hot,
                                         change.double().cpu()).numpy()
            self.counts[g] += np.bincount(current.numpy(), minlength=levels + 1)

    def merge(self, other: Check) -> None:
        if not isinstance(other, OneHotLevels):
            raise TypeError(f"cannot merge a {type(other).__name__} into OneHotLevels")
        if not other.sums:  # it replayed no rows: nothing to add (and no lists to pair)
            return
        if not self.sums:
            self.sums = [s.copy() for s in other.sums]
            self.counts = [c.copy() for c in other.counts]
            return
        for mine, theirs in zip(self.sums + self.counts, other.sums + other.counts, strict=True):
            mine += theirs

    def finish(self, ranking: Ranking) -> CheckResult:
        result = CheckResult(self.name)
        multi = len(ranking.outputs) > 1
        records = []
        for g, group in enumerate(self.groups):
            levels = list(group.columns)
            sums = self.sums[g] if self.sums else np.zeros((len(ranking.outputs),
                                                            len(levels) + 1, len(levels)))
            counts = self.counts[g] if self.counts else np.zeros(len(levels) + 1, dtype=int)
            total = int(counts.sum())
            for o, output in enumerate(ranking.outputs):
                overall = sums[o].sum(0) / max(total, 1)
                for t, to_level in enumerate(levels):
                    records.append({"output": output, "group": group.name, "from_level": ANY,
                                    "to_level": to_level, "rows": total,
                                    "mean_change": float(overall[t])})
                    for f, from_level in enumerate([*levels, OTHER]):
                        if counts[f]:
                            records.append({"output": output, "group": group.name,
                                            "from_level": from_level, "to_level": to_level,
                                            "rows": int(counts[f]),
                                            "mean_change": float(sums[o, f, t] / counts[f])})
                where = f" for output '{output}'" if multi else ""
                moves = ", ".join(f"{level} {overall[t]:+.3g}" for t, level in
                                  enumerate(levels))
                result.notes.append(
                    f"One-hot group **{group.name}**{where}: switching every row to each level "
                    f"changes the score on average by {moves} (exact, from the model; the "
                    "gradients of 0/1 columns are slopes between values they never take).")
        table = pd.DataFrame(records)
        result.tables["one_hot_levels.csv"] = table
        result.summary["one_hot_levels"] = records
        if len(table):
            result.report_tables["One-hot levels: mean score change of switching rows"] = (
                table[table["from_level"] == ANY].drop(columns=["from_level"]))
        return result
