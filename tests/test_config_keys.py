"""docs/configuration.md's key table is generated from the extensions' declarations
(sensaudit/config/keys.py): it must list every declared key and be what the generator writes."""

from __future__ import annotations

from pathlib import Path

from sensaudit.config.keys import declared_keys, key_table, with_table
from sensaudit.methods import METHODS

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_every_declared_key_is_in_the_table():
    text = DOC.read_text()
    missing = [row.key for row in declared_keys() if row.markdown() not in text]
    assert not missing, ("docs/configuration.md misses (or describes differently) "
                         f"{', '.join(missing)}: run `python -m sensaudit.config.keys`")


def test_the_table_is_not_stale():
    text = DOC.read_text()
    assert with_table(text) == text, "docs/configuration.md is stale: run " \
                                     "`python -m sensaudit.config.keys`"


def test_the_table_has_one_row_per_declared_option():
    rows = list(declared_keys())
    assert key_table().count("\n") == len(rows) + 2  # header, rule, rows
    # Each registered method's options, from its declaration: audit.<key>.
    for name, method in METHODS.items():
        if method.Options is not None:
            assert {row.key for row in rows if row.owner == name} == {
                f"audit.{field}" for field in method.Options.__dataclass_fields__}


def test_a_new_declared_key_makes_the_table_stale(monkeypatch):
    from dataclasses import dataclass

    from sensaudit.settings.options import integer, option

    @dataclass(frozen=True)
    class Extra:
        level: int = option(1, integer(0), "how much")

    monkeypatch.setattr(METHODS["gradient"], "Options", Extra)
    text = DOC.read_text()
    assert with_table(text) != text
    assert "| `audit.level` | integer | 1 | an integer >= 0 | gradient: how much |" in key_table()
