"""Each medium's escaping on its own (sensaudit.core.text_safety): hostile names are neutralised,
ordinary names come out exactly as they went in. tests/test_hostile_names.py runs the same
names through the CLI."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pandas as pd
import pyarrow as pa
import pytest

from sensaudit.core.text_safety import (
    csv_frame,
    csv_table,
    csv_text,
    github_data,
    github_property,
    markdown_code,
    markdown_line,
    markdown_name,
    markdown_text,
    terminal,
    visible,
    xml_text,
)

ORDINARY = ["copy_length", "clarity", "x_1", "price usd", "v2.0", "Größe", "価格", "a-b"]
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


@pytest.mark.parametrize("name", ORDINARY)
def test_ordinary_names_are_left_exactly_as_they_are(name):
    for escape in (visible, terminal, markdown_name, markdown_text, markdown_line, github_data,
                   github_property, csv_text, xml_text):
        assert escape(name) == name, escape.__name__
    assert markdown_code(name) == f"`{name}`"


@pytest.mark.parametrize("name", ["x\n::error::pwned", "\x1b]0;title\x07", "\x1b[2J",
                                  "\x9b31m", "\u202eevil", "a\u2028b", "\r\x00\x7f"])
def test_control_characters_are_shown_not_acted_on(name):
    shown = visible(name)
    assert not CONTROL.search(shown) and shown.isprintable()
    assert "\\" in shown  # written as its escape, not dropped
    for escape in (terminal, markdown_name, markdown_text, markdown_line, markdown_code):
        assert not CONTROL.search(escape(name)), escape.__name__


def test_terminal_escapes_rich_markup():
    from rich.console import Console

    console = Console(file=None, force_terminal=False, width=200)
    with console.capture() as capture:
        console.print(terminal("[red]x[/] \x1b[2J"))
    assert capture.get() == "[red]x[/] \\x1b[2J\n"


@pytest.mark.parametrize(("name", "shown"), [
    ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ("a|b", "a\\|b"),
    ("[click](http://e.example)", "\\[click\\](http://e.example)"),
    ("`code`", "\\`code\\`"),
    ("**bold**", "\\*\\*bold\\*\\*"),
    ("_private_", "\\_private\\_"),
    ("~~gone~~", "\\~\\~gone\\~\\~"),
    ("back\\slash", "back\\\\slash"),
    ("&#x202e;", "&amp;#x202e;"),
    ("# sensaudit: PASSED", "# sensaudit: PASSED"),  # inline: no line of its own
    ("x\n# sensaudit: PASSED", "x\\\\n# sensaudit: PASSED"),
])
def test_markdown_names_render_as_their_text(name, shown):
    assert markdown_name(name) == shown


def test_markdown_code_spans_cannot_be_closed_by_the_name():
    assert markdown_code("a`b") == "``a`b``"
    assert markdown_code("``x") == "``` ``x ```"
    assert markdown_code("x\ny") == "`x\\ny`"


def test_markdown_text_keeps_sensaudits_markup_and_drops_html():
    line = "**<img src=x onerror=a()>** holds 40% (share <= 15%) [x](http://e) &amp; `c`"
    assert markdown_text(line) == ("**&lt;img src=x onerror=a()>** holds 40% (share <= 15%) "
                                   "\\[x\\](http://e) &amp;amp; \\`c\\`")


@pytest.mark.parametrize(("text", "line"), [
    ("# sensaudit: PASSED", "\\# sensaudit: PASSED"),
    ("> quoted", "\\> quoted"),
    ("- item", "\\- item"),
    ("1. item", "1\\. item"),
    ("| a | b |", "\\| a | b |"),
    ("```", "\\`\\`\\`"),  # no fence: backticks are escaped anywhere
    ("#hashtag", "#hashtag"),  # not a heading: unchanged
    ("1.5% of rows", "1.5% of rows"),
    ("-0.5 points", "-0.5 points"),
])
def test_markdown_line_cannot_start_a_block(text, line):
    assert markdown_line(text) == line


def test_workflow_commands_follow_githubs_encoding():
    assert github_data("50% done\nnext\r") == "50%25 done%0Anext%0D"
    assert github_data("%0A::error::x") == "%250A::error::x"
    assert github_data("\x1b[2J") == "\\x1b[2J"
    assert github_property("a: b, c\n") == "a%3A b%2C c%0A"


@pytest.mark.parametrize(("value", "written"), [
    ("=HYPERLINK(\"http://e\")", "'=HYPERLINK(\"http://e\")"),
    ("+1", "'+1"), ("-cmd", "'-cmd"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"),
    ("\rx", "'\rx"), ("a=b", "a=b"), ("", ""),
    (-1.5, -1.5), (-3, -3), (None, None),  # numbers stay numbers
])
def test_csv_text_prefixes_only_formula_text(value, written):
    assert csv_text(value) == written


def test_csv_frame_escapes_text_cells_and_headers_not_numbers():
    frame = pd.DataFrame({"feature": ["-cmd", "ok", None], "=h": [-1.0, 2.0, float("nan")],
                          "mixed": [-2, "@x", 3.5]})
    out = csv_frame(frame)
    assert list(out.columns) == ["feature", "'=h", "mixed"]
    assert out["feature"].tolist()[:2] == ["'-cmd", "ok"] and pd.isna(out["feature"][2])
    assert out["'=h"].dtype == frame["=h"].dtype and out["'=h"][0] == -1.0
    assert out["mixed"].tolist() == [-2, "'@x", 3.5]
    assert frame.columns[1] == "=h" and frame["feature"][0] == "-cmd"  # the input untouched
    text = out.to_csv(index=False)
    assert text.splitlines()[1] == "'-cmd,-1.0,-2"


def test_csv_table_escapes_strings_dictionaries_and_headers():
    table = pa.table({"id": pa.array(["=1+2", "r2", None], type=pa.large_string()),
                      "driver": pa.array(["+a", "b", "-c"]).dictionary_encode(),
                      "-n": pa.array([-1.0, 2.0, -3.0])})
    out = csv_table(table)
    assert out.column_names == ["id", "driver", "'-n"]
    assert out["id"].to_pylist() == ["'=1+2", "r2", None]
    assert out["driver"].to_pylist() == ["'+a", "b", "'-c"]
    assert out["'-n"].to_pylist() == [-1.0, 2.0, -3.0] and out["'-n"].type == pa.float64()


def test_xml_text_is_always_well_formed():
    element = ET.Element("testcase", {"name": xml_text("a\x00\x1b[2J\x07<&>\ufffe")})
    parsed = ET.fromstring(ET.tostring(element, encoding="unicode"))
    assert parsed.get("name") == "a\\x00\\x1b[2J\\x07<&>\\ufffe"
