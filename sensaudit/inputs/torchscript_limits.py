"""Size, line and nesting caps on a TorchScript archive's code and debug pickles.

torch.jit.save deflates the code (``code/**/*.py``) and its source-range pickles (``.debug_pkl``),
so a few kilobytes of file can inflate to gigabytes of blank lines or pickle opcodes, and
TorchScript's parser and compiler recurse once per level of nesting (an expression nested 20,000
deep, 2 KB deflated, kills torch.jit.load with SIGSEGV). Parsing and walking cost memory in
proportion to what they read too, so everything is capped from the zip directory before a byte
is read, and the code's nesting once parsed, before any recursive check.

The caps sit far above what torch writes for real models. Measured with torch 2.13 (scripted
TransformerEncoder, MultiheadAttention, LSTM, Conv1d stacks, a Sequential of 150 layers): the
largest code file was 29 KB and 767 lines (nn.functional), the largest debug pickle 69 KB, the
highest deflate ratio 7.4 (a container's repetitive code) and the deepest syntax tree 21.
"""

from __future__ import annotations

import ast

from sensaudit.inputs.archive_checks import Inventory, UnsafeArchive

# Per code file: 35 times the largest measured (a Sequential of thousands of layers is about
# 50 bytes of code each), and a few hundred MB at most for Python's parser on hostile input.
MAX_CODE_FILE_BYTES = 2**20
MAX_CODE_LINES = 50_000  # 65 times the most measured; about 20 bytes a line at the byte cap
MAX_CODE_BYTES = 8 * 2**20  # all code files together
# A debug pickle is 2 to 3 times its code file's size: the same headroom. torch reads them only
# to word errors, but sensaudit walks every pickle torch may read, so they are capped too.
MAX_DEBUG_PKL_BYTES = 4 * 2**20
MAX_DEBUG_PKL_TOTAL = 16 * 2**20
# Deflate ratios: torch's code and debug pickles deflate about 1.5 to 7.5 times; blank lines or
# repeated opcodes, up to 1,000. Members under 64 KiB are too small to matter.
MAX_DEFLATE_RATIO = 50
_RATIO_FROM = 64 * 2**10
# Syntax-tree depth (module, class, def, statement, expression...): 21 measured. TorchScript's
# own recursion is fine at this depth; sensaudit's recursive check stays far from Python's
# recursion limit.
MAX_CODE_DEPTH = 100


def check_sizes(inventory: Inventory, code: list[str]) -> None:
    """Refuse code and debug pickles over the caps, from the zip directory alone."""
    debug = [name for name in inventory.members if name.endswith(".debug_pkl")]
    for names, cap, total_cap, what in ((code, MAX_CODE_FILE_BYTES, MAX_CODE_BYTES, "code"),
                                        (debug, MAX_DEBUG_PKL_BYTES, MAX_DEBUG_PKL_TOTAL,
                                         "debug pickles")):
        for name in names:
            info = inventory.members[name]
            if info.file_size > cap:
                raise UnsafeArchive(f"its member '{name[:80]}' inflates to {info.file_size:,} "
                                    f"bytes, over the {cap:,} sensaudit reads for one")
            if info.file_size > _RATIO_FROM and \
                    info.file_size > MAX_DEFLATE_RATIO * info.compress_size:
                raise UnsafeArchive(f"its member '{name[:80]}' inflates {info.compress_size:,} "
                                    f"bytes to {info.file_size:,}, more than "
                                    f"{MAX_DEFLATE_RATIO} times, as torch's own files never do")
        total = sum(inventory.size(name) for name in names)
        if total > total_cap:
            raise UnsafeArchive(f"its {what} add up to {total:,} bytes, over the {total_cap:,} "
                                "sensaudit reads")


def check_lines(module: str, text: str) -> None:
    lines = text.count("\n")
    if lines > MAX_CODE_LINES:
        raise UnsafeArchive(f"its code file for {module[:80]} has {lines:,} lines, over the "
                            f"{MAX_CODE_LINES:,} sensaudit reads")


def nesting(tree: ast.AST) -> int:
    """The depth of a syntax tree, walked without recursion (so any depth is measured)."""
    deepest = 0
    pending = [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > deepest:
            deepest = depth
        pending.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest
