"""The command line's --out, --data, --format and --engine, applied over a loaded config."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from sensaudit.config.load import Config
from sensaudit.config.ray import check_engine
from sensaudit.config.registries import registered
from sensaudit.config.sections import check_available
from sensaudit.core.errors import ConfigError, did_you_mean


def with_overrides(config: Config, *, report_dir: str | Path | None = None,
                   data_path: str | Path | None = None,
                   formats: list[str] | tuple[str, ...] | None = None,
                   where: str = "formats", engine: str | None = None) -> Config:
    """The config with its report folder, data file, report formats or engine replaced (the
    CLI's --out, --data, --format and --engine; their paths are relative to the current
    folder). ``where`` names the format setting in messages."""
    if formats is not None:
        known = registered("formats")
        names = [f.strip() for item in formats for f in str(item).split(",") if f.strip()]
        if not names:
            raise ConfigError(f"{where}: expected one or more of {', '.join(known)}")
        for name in names:
            if name not in known:
                raise ConfigError(f"{where}: unknown report format '{name}'"
                                  f"{did_you_mean(name, known)} (one of {', '.join(known)})")
        check_available(tuple(names), where)
        config = replace(config, report=replace(config.report,
                                                formats=tuple(dict.fromkeys(names))))
    if report_dir is not None:
        config = replace(config, report=replace(config.report, dir=Path(report_dir)))
    if data_path is not None:
        config = replace(config, data=replace(config.data, path=Path(data_path)))
    if engine is not None:
        config = replace(config, engine=check_engine(engine, "--engine"))
    return config
