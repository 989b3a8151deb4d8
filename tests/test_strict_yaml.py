"""The config's YAML is read strictly: duplicate keys, anchors, aliases and merge keys are
refused with a one-line message naming the file and the lines, and no value, however it is
built, costs more than its size to read or to quote in a message."""

from __future__ import annotations

import gc
import time
import tracemalloc
from pathlib import Path

import pytest
from helpers_bad import cli_error

from sensaudit import ConfigError, load_config
from sensaudit.core.errors import describe
from sensaudit.settings.sections import MAX_SEED

HEAD = """\
model:
  path: m.pt2
data:
  path: d.csv
report:
  dir: out
"""


def _message(tmp_path: Path, text: str) -> str:
    path = tmp_path / "audit.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return str(err.value).removeprefix(f"{path}: ")


# --- duplicate keys ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    pytest.param(HEAD + "model:\n  path: other.pt2\n",
                 "duplicate key 'model' at lines 1 and 7", id="top-level"),
    pytest.param(HEAD.replace("  path: d.csv", "  path: d.csv\n  path: e.csv"),
                 "duplicate key 'path' in data at lines 4 and 5", id="nested"),
    pytest.param(HEAD + "audit:\n  proxies:\n    - feature: copy_length\n      max_share: 0.15\n"
                 "      max_share: 1.0\n",
                 "duplicate key 'max_share' in audit.proxies[0] at lines 10 and 11",
                 id="in-a-list-item"),
    pytest.param(HEAD + "audit:\n  proxies:\n    - {feature: a, max_share: 0.1}\n"
                 "    - {feature: b, max_rank: 2, max_rank: 9}\n",
                 "duplicate key 'max_rank' in audit.proxies[1] twice at line 10",
                 id="flow-mapping-one-line"),
    pytest.param(HEAD + "audit:\n  proxies:\n    - {feature: a, max_share: 0.1}\n"
                 "compare:\n  seed: 1\naudit:\n  top_k: 2\n",
                 "duplicate key 'audit' at lines 7 and 12", id="second-audit-block"),
    pytest.param(HEAD + "audit:\n  top_k: 2\n  'top_k': 3\n",
                 "duplicate key 'top_k' in audit at lines 8 and 9", id="quoted-and-plain"),
])
def test_duplicate_keys_are_refused(tmp_path, text, message):
    assert _message(tmp_path, text) == message


def test_duplicate_proxy_limit_fails_through_the_cli(tmp_path):
    # Regression: PyYAML kept the last max_share, so the gate silently allowed 100%.
    cfg = tmp_path / "audit.yaml"
    cfg.write_text(HEAD + "audit:\n  proxies:\n    - feature: c\n      max_share: 0.15\n"
                   "      max_share: 1.0\n", encoding="utf-8")
    assert cli_error("run", str(cfg)) == (
        f"{cfg}: duplicate key 'max_share' in audit.proxies[0] at lines 10 and 11")


# --- anchors, aliases, merge keys -------------------------------------------------------------

LAUGHS = ["      - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
    f"      - &{b} [*{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}]"
    for a, b in zip("abcdefgh", "bcdefghi", strict=True)]
# 1 KB that PyYAML expands to 10**9 'lol's once anything walks it; reason must be a string, so
# the old code's message rendered the whole value with repr() and grew past 3 GB.
ALIAS_BOMB = HEAD + "audit:\n  proxies:\n    - feature: c\n      max_share: 0.5\n      reason:\n" \
    + "\n".join(LAUGHS) + "\n"


def test_alias_bomb_is_refused_at_once_with_little_memory(tmp_path):
    assert len(ALIAS_BOMB) < 1100
    cfg = tmp_path / "audit.yaml"
    cfg.write_text(ALIAS_BOMB, encoding="utf-8")
    # The garbage earlier tests left is not this config's cost: collect it before measuring.
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        message = cli_error("run", str(cfg))
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message == f"{cfg}: YAML anchors (&a) are not allowed in a sensaudit config (line 12)"
    assert elapsed < 0.5
    assert peak < 5 * 2**20


@pytest.mark.parametrize("text, message", [
    pytest.param(HEAD + "audit:\n  top_k: &k 2\n  examples_in_report: *k\n",
                 "YAML anchors (&k) are not allowed in a sensaudit config (line 8)",
                 id="anchor"),
    pytest.param(HEAD + "audit:\n  top_k: *k\n",
                 "YAML aliases (*k) are not allowed in a sensaudit config; write the value out "
                 "(line 8)", id="alias"),
    pytest.param(HEAD + "audit:\n  <<: {top_k: 1}\n  top_k: 2\n",
                 "YAML merge keys (<<) are not allowed in a sensaudit config (line 8)",
                 id="merge-key"),
])
def test_anchors_aliases_and_merge_keys_are_refused(tmp_path, text, message):
    assert _message(tmp_path, text) == message


# --- values PyYAML itself cannot build (they ended as exit 3) ---------------------------------


@pytest.mark.parametrize("text, message", [
    pytest.param(HEAD + "compare:\n  seed: " + "9" * 5000 + "\n",
                 "the integer at line 8, column 9 is too large", id="integer-over-4300-digits"),
    pytest.param(HEAD + "audit:\n  top_k: 2024-13-45\n",
                 "cannot read '2024-13-45' as a YAML timestamp (line 8, column 10)",
                 id="impossible-date"),
    pytest.param(HEAD + "audit:\n  allow_nonfinite: !!bool maybe\n",
                 "cannot read 'maybe' as a YAML bool (line 8, column 20)", id="tagged-bool"),
    pytest.param(HEAD + "audit:\n  top_k: " + "[" * 200 + "]" * 200 + "\n",
                 "the config nests more than 50 levels deep (line 8)", id="deep-nesting"),
    pytest.param(HEAD + "---\nmodel: {path: x}\n",
                 "invalid YAML at line 7, column 1: but found another document",
                 id="two-documents"),
])
def test_unbuildable_values_are_bad_input(tmp_path, text, message):
    assert _message(tmp_path, text) == message


def test_huge_hex_integer_is_quoted_briefly(tmp_path):
    # Hex has no digit limit, so the value is built; its message must not print it.
    message = _message(tmp_path, HEAD + "compare:\n  seed: 0x" + "f" * 5000 + "\n")
    assert message == ("compare.seed must be an integer from 0 to 2**64 - 1 (got <an integer of "
                       "20000 bits>, an int)")


def test_valid_config_still_loads(tmp_path):
    path = tmp_path / "audit.yaml"
    path.write_text(HEAD + "audit:\n  proxies:\n    - {feature: a, max_share: 0.1}\n"
                    "compare:\n  seed: " + str(MAX_SEED) + "\n", encoding="utf-8")
    cfg = load_config(path)
    assert cfg.compare.seed == MAX_SEED
    assert cfg.audit.proxies[0].max_share == 0.1


# --- describe(): bounded work, not just bounded output ----------------------------------------


def _shared_nesting(levels: int) -> list:
    """10**levels leaves in a few hundred bytes: every level repeats one list object."""
    value: list = ["lol"] * 10
    for _ in range(levels):
        value = [value] * 10
    return value


def test_describe_of_a_huge_shared_value_is_fast():
    # repr() takes a second and 70 MB here (and grows tenfold per level: the alias bomb's
    # 10**9 leaves hung at 3 GB); describe() looks at a few items only.
    value = _shared_nesting(6)
    start = time.perf_counter()
    text = describe(value)
    assert time.perf_counter() - start < 0.05
    assert text == "[[[...], [...], [...], [...], ...], [[...], [...], [...],..., a list"


@pytest.mark.parametrize("value, expected", [
    ({"feature": "copy_length"}, "{'feature': 'copy_length'}, a dict"),
    (["model", "data"], "['model', 'data'], a list"),
    ("x" * 100, "'" + "x" * 56 + "..., a str"),
    (2**70, "1180591620717411303424, an int"),
    (10**5000, "<an integer of 16610 bits>, an int"),
    ((1,), "(1,), a tuple"),
    (set(), "set(), a set"),
    ({"a": {"b": {"c": 1}}}, "{'a': {'b': {...}}}, a dict"),
    (list(range(1000)), "[0, 1, 2, 3, ...], a list"),
    (None, "None, a NoneType"),
    (1.5, "1.5, a float"),
], ids=lambda v: type(v).__name__)
def test_describe_renders(value, expected):
    assert describe(value) == expected


@pytest.mark.parametrize("text, line", [
    (HEAD + "# a comment with a NUL \0 in it\n", 7),
    ("model:\n  path: m\x07.pt2\n", 2),
    ("\x1b[31m: 1\n", 1),
])
def test_control_characters_are_bad_input_naming_the_line(tmp_path, text, line):
    config = tmp_path / "audit.yaml"
    config.write_text(text, encoding="utf-8")
    code = f"U+{ord(next(c for c in text if c in chr(0) + chr(7) + chr(27))):04X}"
    assert cli_error("run", str(config)) == (
        f"{config}: invalid YAML at line {line}: the control character {code} is not allowed "
        "in YAML, even in a comment; remove it")
