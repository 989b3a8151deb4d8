"""TorchScript archives are capped before they are read: code and debug pickles by size, lines,
deflate ratio and nesting, every pickle by nesting (sensaudit.inputs.torchscript_limits and
pickle_walk). Each cap is shown refusing a crafted file quickly and in bounded memory; where
plain torch crashes or hangs on the file, a fresh interpreter shows it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import helpers_crafted as crafted
import pytest
from helpers_bad import Scorer

from sensaudit.inputs import torchscript_limits as limits
from sensaudit.inputs.pickle_walk import MAX_DEPTH, MAX_TUPLE_DEPTH
from sensaudit.inputs.torchscript_code import CodeFacts, UnsafeCode, check_type_string

REFUSED = "refusing to load this TorchScript file: "
CODE = "code/__torch__/helpers_bad.py"
FORWARD = "    w = self.w\n    return torch.matmul(x, w)\n"


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    return crafted.scripted(Scorer(), tmp_path_factory.mktemp("ts") / "plain.pt")


def _refused_quickly(path: Path) -> str:
    """The refusal's reason (load_model's message between the prefix and the advice), checked
    to come within seconds and 50 MiB of Python allocations, whatever the file inflates to."""
    message, elapsed, peak = crafted.refusal_cost(path)
    assert elapsed < 10 and peak < 50 * 2**20, (elapsed, peak)
    assert message.startswith(f"{path}: {REFUSED}")
    return message[len(f"{path}: {REFUSED}"):].split(". TorchScript is code")[0]


def _plain_torch_load(path: Path, timeout: float) -> int | None:
    """torch.jit.load in a fresh interpreter: its exit status, or None if still running after
    ``timeout`` seconds (then killed)."""
    try:
        return subprocess.run([sys.executable, "-c", "import sys, torch; "
                               "torch.jit.load(sys.argv[1])", str(path)],
                              capture_output=True, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return None


def _with_forward(plain: Path, target: Path, expr: str) -> Path:
    """The plain scorer whose forward also computes ``_0 = expr`` (code deflated, as torch
    writes it)."""
    with_expr = f"    w = self.w\n    _0 = {expr}\n    return torch.matmul(x, w)\n"
    return crafted.rebuild(plain, target, crafted.edit_text(CODE, FORWARD, with_expr))


# --- sizes, lines and ratios, from the zip directory ------------------------------------------


def test_code_padded_with_blank_lines_is_refused_before_it_is_read(plain, tmp_path):
    # 64 KiB on disk, 64 MiB of blank lines inflated (the report: 19 KB -> 4.7 GB, then a crash
    # inside torch).
    bomb = crafted.inflating_member(plain, tmp_path / "blank.pt", CODE, 64 * 2**20, b"\n" * 2**16)
    assert bomb.stat().st_size < 2**20
    assert _refused_quickly(bomb) == (f"its member '{CODE}' inflates to 67,108,864 bytes, over "
                                      "the 1,048,576 sensaudit reads for one")


def test_a_debug_pickle_bomb_is_refused_before_it_is_read(plain, tmp_path):
    # EMPTY_LIST opcodes inflating to just under the 128 MiB any document may have: walking
    # them once built a Python object per byte (51 KB -> 5.5 GB).
    size = 127 * 2**20
    bomb = crafted.inflating_member(plain, tmp_path / "debug.pt", f"{CODE}.debug_pkl", size,
                                    b"]" * 2**16)
    assert bomb.stat().st_size < 2**20
    assert _refused_quickly(bomb) == (f"its member '{CODE}.debug_pkl' inflates to "
                                      f"{size:,} bytes, over the 4,194,304 sensaudit reads "
                                      "for one")


def test_a_member_deflated_far_beyond_torch_is_refused(plain, tmp_path):
    # Under the size cap, but blank lines deflate 1,000 times where torch's code does under 10.
    size = limits.MAX_CODE_FILE_BYTES // 2
    bomb = crafted.inflating_member(plain, tmp_path / "ratio.pt", CODE, size, b"\n" * 2**16)
    reason = _refused_quickly(bomb)
    assert reason.startswith(f"its member '{CODE}' inflates ")
    assert reason.endswith(f" bytes to {size:,}, more than 50 times, as torch's own files "
                           "never do")


def test_code_over_the_line_cap_is_refused(plain, tmp_path):
    # Blank lines, 1 byte each: under the byte cap, and too small for the ratio cap to apply.
    lines = limits.MAX_CODE_LINES + 1
    evil = crafted.rebuild(plain, tmp_path / "lines.pt", crafted.edit_text(
        CODE, FORWARD, FORWARD + "\n" * lines))
    assert _refused_quickly(evil) == (f"its code file for __torch__.helpers_bad has "
                                      f"{lines + 10:,} lines, over the 50,000 sensaudit reads")


def test_code_files_adding_up_over_the_cap_are_refused(plain, tmp_path):
    # Nine stored files of just under 1 MiB each: each under its own cap, not together.
    filler = b"x = 1\n" * (limits.MAX_CODE_FILE_BYTES // 6)
    extra = {f"code/__torch__/pad{i}.py": filler for i in range(9)}
    evil = crafted.rebuild(plain, tmp_path / "total.pt", extra=extra)
    reason = _refused_quickly(evil)
    assert reason.startswith("its code add up to ") and reason.endswith(
        " bytes, over the 8,388,608 sensaudit reads")


# --- nesting -----------------------------------------------------------------------------------


def test_deeply_nested_code_crashes_plain_torch_and_is_refused(plain, tmp_path):
    """An expression 20,000 additions deep: 40 KB of code (too small for the ratio cap), 2 KB
    on disk. TorchScript's recursive parser overflows its stack (SIGSEGV) in torch.jit.load;
    Python's parser gives up on it too, and sensaudit refuses what Python cannot parse."""
    evil = _with_forward(plain, tmp_path / "deep.pt", "+".join(["w"] * 20_000))
    assert evil.stat().st_size < 4096
    assert _plain_torch_load(evil, timeout=120) == -signal.SIGSEGV
    assert _refused_quickly(evil) == "__torch__.helpers_bad: code nested too deeply to parse"


@pytest.mark.parametrize("expr, found", [
    ("-" * 150 + "w", "code nested more than 100 levels deep"),  # parses; over the cap
    ("-" * 50_000 + "w", "code nested too deeply to parse"),  # Python's parser gives up
])
def test_code_nesting_is_capped(plain, tmp_path, expr, found):
    evil = _with_forward(plain, tmp_path / "nested.pt", expr)
    assert _refused_quickly(evil) == f"__torch__.helpers_bad: {found}"


def _nested_tuple_constant(plain: Path, target: Path, depth: int) -> Path:
    """constants.pkl holding one tuple nested ``depth`` deep, which forward uses."""
    nested = b"\x80\x02)" + b"\x85" * depth + b"\x85."  # EMPTY_TUPLE, then TUPLE1 each level

    def edit(name: str, data: bytes) -> bytes:
        data = crafted.edit_text(CODE, FORWARD, FORWARD.replace(
            "    return", "    _0 = CONSTANTS.c0\n    return"))(name, data)
        return nested if name.endswith("/constants.pkl") else data
    return crafted.rebuild(plain, target, edit)


@pytest.mark.slow
def test_a_nested_tuple_constant_hangs_plain_torch_and_is_refused(plain, tmp_path):
    """A tuple constant nested 40 deep: under 2 KB. torch.jit.load's time doubles with each
    level (30 levels: 40 s), so it would not finish for days; sensaudit refuses tuples within
    tuples past 10."""
    evil = _nested_tuple_constant(plain, tmp_path / "tuples.pt", 40)
    assert evil.stat().st_size < 2048
    assert _plain_torch_load(evil, timeout=5) is None  # still parsing after 5 s: a hang
    assert _refused_quickly(evil) == (f"its constants.pkl holds tuples nested more than "
                                      f"{MAX_TUPLE_DEPTH} deep")


def test_deeply_nested_lists_in_a_pickle_are_refused(plain, tmp_path):
    depth = MAX_DEPTH + 1
    nested = b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"\x85."

    def edit(name: str, data: bytes) -> bytes:
        return nested if name.endswith("/constants.pkl") else data
    evil = crafted.rebuild(plain, tmp_path / "lists.pt", edit)
    assert _refused_quickly(evil) == (f"its constants.pkl holds values nested more than "
                                      f"{MAX_DEPTH} deep")


def test_type_tags_are_capped_like_code():
    check_type_string("List[Dict[str, Tuple[int, Tensor]]]", CodeFacts())
    with pytest.raises(UnsafeCode) as err:
        check_type_string("List[" * 120 + "int" + "]" * 120, CodeFacts())
    assert str(err.value) == "a type tag nested more than 100 levels deep"


def test_debug_pickles_adding_up_over_the_cap_are_refused(plain, tmp_path):
    # Five code files, each with a stored debug pickle just under its own cap.
    extra: dict[str, bytes] = {}
    for i in range(5):
        extra[f"code/__torch__/pad{i}.py"] = b"x = 1\n"
        extra[f"code/__torch__/pad{i}.py.debug_pkl"] = bytes(limits.MAX_DEBUG_PKL_BYTES - 1)
    evil = crafted.rebuild(plain, tmp_path / "debug_total.pt", extra=extra)
    reason = _refused_quickly(evil)
    assert reason.startswith("its debug pickles add up to ") and reason.endswith(
        " bytes, over the 16,777,216 sensaudit reads")
