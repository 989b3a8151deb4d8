"""Names from the user's files, made safe for each medium sensaudit writes them to.

Feature, output and id names come from untrusted data (CSV/Parquet headers, configs). Written
as they are, a name could end a line and forge what follows it: a ``::error`` workflow command
in a CI log, a ``# sensaudit: PASSED`` heading in report.md, raw HTML in the job summary,
terminal escape sequences (clear the screen, retitle the window, hide text), a spreadsheet
formula in a CSV. Each function here escapes text for one medium by that medium's own rules,
and leaves ordinary names (letters, digits, spaces, ``.`` and an inner ``_`` or ``-``) as
they are, so reports of well-named data keep their exact bytes.

JSON and Parquet reports keep names exact: their encoders already quote every string.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports this module before pandas and pyarrow (--help stays light)
    import pandas as pd
    import pyarrow as pa


def visible(text: str) -> str:
    """Every character that is not printable written as its Python escape (ESC as ``\\x1b``,
    a newline as ``\\n``, U+202E as ``\\u202e``): shown, never acted on, and never the start
    of a new line."""
    text = str(text)
    if text.isprintable():  # the common case, fast
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


# --- terminal (rich) -------------------------------------------------------------------------

def terminal(text: str) -> str:
    """For a rich string read as markup (table cells, titles): control characters shown
    escaped, and "[red]" or "[/]" in a name printed, never read as style."""
    from rich.markup import escape

    return escape(visible(text))


# --- markdown (report.md, comparison.md, the GitHub job summary) ----------------------------

# Characters that start inline markup or close a table cell. `_` is escaped only at a word's
# edge: inside a word (copy_length) GitHub never reads it as emphasis, and escaping it there
# would change every ordinary report.
_MD_INLINE = re.compile(r"[\\`*\[\]|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_MD_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# Raw HTML (a tag, comment or declaration) and autolinks start with "<" then one of these;
# an entity ("&#x202e;", "&lt;") with "&" then a letter or "#". "<=" in sensaudit's own text
# is neither, and stays.
_HTML_START = re.compile(r"<(?=[A-Za-z/!?])|&(?=[A-Za-z#])")
# Links, images and code spans in a line's quoted names: sensaudit's own lines use none.
_MD_LINK = re.compile(r"[\[\]`]")
# What makes a line a heading, quote, list item, table row or code fence when it starts it.
_BLOCK_START = re.compile(r"^\s*(#{1,6}(?=\s|$)|>|[-+*](?=\s|$)|\d{1,9}[.)](?=\s|$)|`{3,}"
                          r"|~{3,}|\|)")


def markdown_name(name: object) -> str:
    """A name inline in markdown prose or in a table cell: shown as it is written, never as
    HTML, emphasis, a link, a code span or the end of a cell, and always on its one line."""
    text = visible(str(name))
    text = _MD_INLINE.sub(lambda m: "\\" + m.group(), text)
    return "".join(_MD_HTML.get(c, c) for c in text)


def markdown_code(name: object) -> str:
    """A name as an inline code span (`name`): backslashes do not escape inside code, so the
    fence is one backtick longer than the longest run in the name (CommonMark's rule)."""
    text = visible(str(name))
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown_text(text: str) -> str:
    """A line sensaudit wrote itself (a finding with its **bold**, a table row) that quotes
    names: kept on its line, with no raw HTML, character entity, link or code span. Its own
    markup (**bold**, table pipes) stays: where the line is built, names in table cells are
    :func:`markdown_name`'d."""
    text = _HTML_START.sub(lambda m: _MD_HTML[m.group()], visible(text))
    return _MD_LINK.sub(lambda m: "\\" + m.group(), text)


def markdown_line(text: str) -> str:
    """:func:`markdown_text` for text at the start of a line (an error message, a list
    item's text): what would make it a heading, quote, list or table is escaped."""
    text = markdown_text(text)
    start = _BLOCK_START.match(text)
    if start is None:
        return text
    # A backslash before the marker's punctuation ("\#", "1\."): shown as it is written.
    at = start.end() - 1 if start.group(1)[0].isdigit() else start.start(1)
    return text[:at] + "\\" + text[at:]


# --- GitHub Actions workflow commands --------------------------------------------------------

def github_data(text: str) -> str:
    """A workflow command's message: lines it holds are encoded as GitHub's runner decodes
    them (%0A), other control characters shown escaped, so nothing ends the command early."""
    text = "".join(c if c in "\r\n" else visible(c) for c in str(text))
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_property(text: str) -> str:
    """A workflow command's property value (file=, title=): ``:`` and ``,`` would end it."""
    return github_data(text).replace(":", "%3A").replace(",", "%2C")


# --- CSV -------------------------------------------------------------------------------------

# Spreadsheets run a cell starting with one of these as a formula (OWASP, "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: object) -> object:
    """A CSV cell: text that a spreadsheet would run as a formula gets a leading ``'``, which
    spreadsheets show as text. Numbers (a negative one too) are returned as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with its header and text cells escaped by :func:`csv_text`; numeric columns are
    untouched. The escaped names differ from the data's: a reader wanting them exactly has
    summary.json or the Parquet files."""
    import pandas as pd

    out = frame.rename(columns=lambda c: csv_text(c) if isinstance(c, str) else c)
    for i in range(out.shape[1]):  # by position: escaped names may repeat
        series = out.iloc[:, i]
        if pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series):
            out.isetitem(i, series.map(csv_text, na_action="ignore"))
    return out


def csv_table(table: pa.Table) -> pa.Table:
    """:func:`csv_frame` for an Arrow table (examples.csv, streamed), in Arrow's kernels."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for column in table.columns:
        kind = column.type
        if pa.types.is_dictionary(kind) and pa.types.is_string(kind.value_type):
            column, kind = column.cast(pa.string()), pa.string()
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            risky = pc.match_substring_regex(column, r"^[=+\-@\t\r]")
            quote, empty = pa.scalar("'", type=kind), pa.scalar("", type=kind)
            column = pc.if_else(risky, pc.binary_join_element_wise(quote, column, empty), column)
        columns.append(column)
    names = [str(csv_text(name)) for name in table.column_names]
    return pa.table(columns, names=names)


# --- XML (junit.xml) -------------------------------------------------------------------------

# Characters XML 1.0 cannot hold at all, even escaped (a column name may contain them).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value: object) -> str:
    """Text XML 1.0 can hold (ElementTree escapes <, & and quotes itself): characters it
    forbids are written as \\x.. escapes."""
    return _NOT_XML.sub(lambda m: m.group().encode("unicode_escape").decode(), str(value))
