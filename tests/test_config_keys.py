"""docs/configuration.md's key table, and each method's and check's options table on its page
(docs/methods/<name>.md, docs/checks/<name>.md), are generated from the extensions'
declarations (sensaudit/config/keys.py): they must list every declared key and be what the
generator writes."""

from __future__ import annotations

from pathlib import Path

from sensaudit.config.keys import (
    OWNER_END,
    OWNER_START,
    declared_keys,
    key_table,
    main,
    owner_table,
    owners_in,
    with_owner_tables,
    with_table,
)
from sensaudit.methods import METHODS

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
PAGES = sorted(DOC.parent.rglob("*.md"))


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


def test_each_pages_options_table_is_not_stale():
    for page in PAGES:
        text = page.read_text()
        assert with_owner_tables(text) == text, (f"{page.name}'s options table is stale: run "
                                                 "`python -m sensaudit.config.keys`")


def test_every_owner_of_a_declared_key_has_its_table_on_a_page():
    tables = {owner for page in PAGES for owner in owners_in(page.read_text())}
    assert {row.owner for row in declared_keys() if row.owner != "compare"} <= tables


def test_a_page_table_is_its_owners_rows_of_the_key_table():
    rows = owner_table("smoothgrad").splitlines()
    assert rows[:2] == ["| key | type | default | limit | meaning |", "|---|---|---|---|---|"]
    assert rows[2:] == [line for line in key_table().splitlines()
                                         if line.endswith(" |") and "| smoothgrad: " in line]
    assert owner_table("gradient") == "`gradient` declares no options of its own.\n"


def test_a_new_declared_key_makes_its_page_stale_and_main_rewrites_it(monkeypatch, tmp_path):
    from dataclasses import dataclass

    from sensaudit.settings.options import integer, option

    @dataclass(frozen=True)
    class Extra:
        level: int = option(1, integer(0), "how much")

    page = (DOC.parent / "methods" / "gradient.md").read_text()
    monkeypatch.setattr(METHODS["gradient"], "Options", Extra)
    assert with_owner_tables(page) != page
    # main() rewrites the key table and every page's own table, nothing else.
    (tmp_path / "methods").mkdir()
    (tmp_path / "configuration.md").write_text(DOC.read_text())
    (tmp_path / "methods" / "gradient.md").write_text(page)
    (tmp_path / "other.md").write_text("no markers\n")
    main(str(tmp_path / "configuration.md"))
    rewritten = (tmp_path / "methods" / "gradient.md").read_text()
    block = rewritten.split(OWNER_START.format(owner="gradient"))[1].split(OWNER_END)[0]
    assert "| `audit.level` | integer | 1 | an integer >= 0 | gradient: how much |" in block
    assert (tmp_path / "other.md").read_text() == "no markers\n"
