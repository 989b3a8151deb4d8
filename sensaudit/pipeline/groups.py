"""``audit.groups``: features whose sensitivity counts together, as rows of the ranking.

Two correlated columns (copy_length and word_count) can each stay under a proxy limit while
together they drive the score: a group's share is the sum of its members' shares, and it gets a
rank among the groups and the ungrouped features, so a proxy limit that names the group sees
the whole. sensitivity.csv then has one row per group (``feature`` and ``group`` both the
group's name; the per-unit columns, which do not add up across features, left empty) and a
``group`` column naming each member's group. Without groups the table is unchanged.
"""

from __future__ import annotations

import math

import pandas as pd

from sensaudit.results.audit_result import SENSITIVITY_COLUMNS, rank_shares
from sensaudit.settings.checks import FeatureGroup

GROUP_COLUMN = "group"


def add_group_rows(table: pd.DataFrame, groups: tuple[FeatureGroup, ...]) -> pd.DataFrame:
    """``table``: results.SENSITIVITY_COLUMNS, ranked per output. Returns it with a ``group``
    column and, after each output's feature rows, its group rows ranked best first."""
    if not groups:
        return table
    member_of = {column: group.name for group in groups for column in group.columns}
    frames = []
    for output, part in table.groupby("output", sort=False):
        part = part.copy()
        part[GROUP_COLUMN] = part["feature"].map(member_of).fillna("")
        rows = []
        for group in groups:
            members = part[part["feature"].isin(group.columns)]
            rows.append({"output": output, "feature": group.name, "mean_gradient": math.nan,
                         "mean_abs_gradient": math.nan, "rms_gradient": math.nan,
                         "std": math.nan,
                         "scaled_sensitivity": float(members["scaled_sensitivity"].sum()),
                         "share": float(members["share"].sum()), "flagged": False,
                         GROUP_COLUMN: group.name})
        grouped = pd.DataFrame(rows)
        # Ranked as the score sees them: each group one unit, each other feature one.
        units = pd.concat([part.loc[part[GROUP_COLUMN] == "", "share"], grouped["share"]],
                          ignore_index=True)
        grouped["rank"] = rank_shares(units).to_numpy()[-len(groups):]
        frames += [part, grouped.sort_values(["rank", "feature"], kind="stable")]
    return pd.concat(frames, ignore_index=True)[[*SENSITIVITY_COLUMNS, GROUP_COLUMN]]


def proxy_features(names: list[str], groups: tuple[FeatureGroup, ...]) -> list[str]:
    """Declared proxy names with each group's name replaced by its members."""
    members = {group.name: list(group.columns) for group in groups}
    expanded: list[str] = []
    for name in names:
        for feature in members.get(name, [name]):
            if feature not in expanded:
                expanded.append(feature)
    return expanded
