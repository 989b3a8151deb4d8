"""The feature names the checks' settings give, checked against the audited features.

The config alone cannot know the features (they come from the data's header), so these are
checked once the table is open and before any row is read: a typo in a group, an expectation
or an immutable feature must stop the audit, not silently switch a check off.
"""

from __future__ import annotations

from sensaudit.core.errors import ConfigError, did_you_mean
from sensaudit.settings.sections import AuditSettings


def check_check_names(settings: AuditSettings, features: tuple[str, ...],
                      source: object) -> None:
    """Groups, expectations and immutable features name audited features (or groups)."""
    known = ", ".join(features)
    owner: dict[str, str] = {}
    for group in settings.groups:
        key = f"audit.groups.{group.name}"
        if group.name in features:
            raise ConfigError(f"{source}: {key}: the group's name is also a feature's; name "
                              "the group differently")
        for column in group.columns:
            if column not in features:
                raise ConfigError(f"{source}: {key} lists '{column}', which is not an audited "
                                  f"feature{did_you_mean(column, features)} (features: {known})")
            if column in owner:
                raise ConfigError(f"{source}: {key} lists '{column}', which is in group "
                                  f"'{owner[column]}' already")
            owner[column] = group.name
    for i, expectation in enumerate(settings.expect):
        if expectation.feature not in features:
            raise ConfigError(f"{source}: audit.expect[{i}].feature '{expectation.feature}' is "
                              "not an audited feature"
                              f"{did_you_mean(expectation.feature, features)} "
                              f"(features: {known})")
    if settings.robustness is not None:
        names = [*features, *(g.name for g in settings.groups)]
        for i, name in enumerate(settings.robustness.immutable):
            if name not in names:
                raise ConfigError(f"{source}: audit.robustness.immutable[{i}] '{name}' is not "
                                  f"an audited feature or group{did_you_mean(name, names)} "
                                  f"(features: {known})")


def group_names(settings: AuditSettings) -> tuple[str, ...]:
    return tuple(group.name for group in settings.groups)
