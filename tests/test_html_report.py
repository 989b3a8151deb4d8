"""report.html is one self-contained page: no script, nothing loaded from outside, the charts
embedded. Opened in headless Chromium (Debian's package; .ci/run installs it) it draws its
charts, and the numbers under each chart, read from the page's DOM as the browser built it, are
sensitivity.csv's."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from audit_setup import WEIGHTS, write_assets, write_config
from models import Linear, save_exported
from torch import tensor

from sensaudit import load_config, run_audit, run_compare

pytest.importorskip("matplotlib", reason="the charts extra (matplotlib) is not installed")

from matplotlib.image import imread  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium; "
                             ".ci/run installs it)")
ORANGE = (0xEF, 0x8F, 0x00)  # a declared proxy within its limit: only its bar has this colour


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A passing audit (length within a generous limit, so its bar is orange) with csv and
    html reports; returns the report folder."""
    folder = tmp_path_factory.mktemp("html")
    assets = write_assets(folder / "assets")
    config = write_config(folder / "audit.yaml", assets, max_share=0.95,
                          report="report:\n  dir: out\n  formats: [csv, html]\n")
    run_audit(load_config(config))
    return folder / "out"


class _Page(HTMLParser):
    """Tags and attributes, and the chart-data tables' cells, of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "table" and attributes.get("data-chart"):
            self._table = attributes["data-chart"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None
    flags = ["--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--disable-dev-shm-usage", f"--user-data-dir={cwd / 'profile'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=180)


def _shares_table(page: _Page) -> pd.DataFrame:
    rows = page.tables["chart-shares.png"]
    return pd.DataFrame(rows[1:], columns=rows[0])


def _percents(cells: pd.Series) -> list[float]:
    """Shares as the page shows them ("39.01%"), as fractions."""
    assert cells.str.endswith("%").all(), cells.tolist()
    return (cells.str.rstrip("%").astype(float) / 100).tolist()


def test_the_page_loads_nothing_from_outside(report):
    text = (report / "report.html").read_text(encoding="utf-8")
    page = _parse(text)
    names = {tag for tag, _ in page.tags}
    assert not names & {"script", "link", "iframe", "object", "embed", "base"}
    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    assert len(images) == 3  # shares, contributions, and the suspects check's chart
    for src in images:
        assert src is not None and src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in text and "https://" not in text
    csp = [a for tag, a in page.tags if tag == "meta" and a.get("http-equiv")]
    assert csp and csp[0]["content"] == ("default-src 'none'; img-src data:; "
                                         "style-src 'unsafe-inline'")


def test_chart_numbers_are_the_csv_numbers(report):
    page = _parse((report / "report.html").read_text(encoding="utf-8"))
    shown = _shares_table(page)
    csv = pd.read_csv(report / "sensitivity.csv").sort_values("rank")
    assert shown["feature"].tolist() == csv["feature"].tolist()
    assert _percents(shown["share"]) == pytest.approx(csv["share"].tolist(), abs=5e-5)


@needs_chromium
def test_chromium_draws_the_page_and_its_charts(report, tmp_path):
    shot = tmp_path / "report.png"
    done = _chromium("--window-size=1000,2200", f"--screenshot={shot}",
                     (report / "report.html").as_uri(), cwd=tmp_path)
    assert shot.is_file(), done.stderr[-2000:]
    pixels = (imread(shot)[:, :, :3] * 255).round().astype(int)
    assert pixels.shape[:2] == (2200, 1000)
    assert pixels.std() > 20  # a page was drawn, not a blank one
    # The charts are images: the proxy's orange bar shows only if they decoded and drew.
    orange = (abs(pixels - ORANGE).max(axis=2) <= 2).sum()
    assert orange > 1000, orange


@needs_chromium
def test_chromium_dom_holds_the_csv_numbers(report, tmp_path):
    done = _chromium("--dump-dom", (report / "report.html").as_uri(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    page = _parse(done.stdout)
    shown = _shares_table(page)
    csv = pd.read_csv(report / "sensitivity.csv").sort_values("rank")
    assert shown["feature"].tolist() == csv["feature"].tolist()
    assert _percents(shown["share"]) == pytest.approx(csv["share"].tolist(), abs=5e-5)
    assert "chart-contributions.png" in page.tables


@needs_chromium
def test_comparison_page_draws_in_chromium(tmp_path):
    assets = write_assets(tmp_path / "assets")
    config = write_config(tmp_path / "audit.yaml", assets, max_share=0.95,
                          extra="compare:\n  bootstrap_samples: 20\n",
                          report="report:\n  dir: out\n  formats: [csv, html]\n")
    run_compare(load_config(config), assets / "scorer.pt2", assets / "scorer.pt2")
    done = _chromium("--dump-dom", (tmp_path / "out" / "comparison.html").as_uri(),
                     cwd=tmp_path)
    rows = _parse(done.stdout).tables["chart-compare-shares.png"]
    shown = pd.DataFrame(rows[1:], columns=rows[0])
    csv = pd.read_csv(tmp_path / "out" / "comparison.csv")
    for column in ("share_old", "share_new", "delta_share", "delta_share_low",
                   "delta_share_high"):
        assert _percents(shown[column]) == pytest.approx(csv[column].tolist(), abs=5e-5)


# --- issue 20 (4): every table report.md holds, charts that draw, a page that fits 1280 px -------

FULL_EXTRA = ("  fail_on_suspects: true\n  threshold: 3.0\n"
              "  expect:\n    - {feature: clarity, direction: increasing, "
              "max_violation_rate: 0.02}\n"
              "  robustness: {epsilon: 0.1, steps: 2, bounds: none, max_shift: 0.2}\n"
              "  linearity: {}\n")
WINDOW = 1280


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    """An audit with every check that draws a chart, its reports in markdown and html, and a
    feature name long enough to overflow a table that does not wrap it."""
    folder = tmp_path_factory.mktemp("full")
    assets = write_assets(folder / "assets")
    data = pd.read_csv(assets / "eval.csv")
    data = data.rename(columns={"noise": "noise_" + "x" * 120})
    data.to_csv(assets / "eval.csv", index=False)
    config = write_config(folder / "audit.yaml", assets, max_share=0.95, extra=FULL_EXTRA,
                          report="report:\n  dir: out\n  formats: [csv, markdown, html]\n")
    config.write_text(config.read_text().replace("feature: noise\n",
                                                 f"feature: noise_{'x' * 120}\n"))
    run_audit(load_config(config))
    return folder / "out"


class _Headings(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.h2: list[str] = []
        self._in: str | None = None
        self.css = ""

    def handle_starttag(self, tag, attrs):
        self._in = tag if tag in ("h2", "style") else None
        if tag == "h2":
            self.h2.append("")

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "h2":
            self.h2[-1] += data
        elif self._in == "style":
            self.css += data


def test_the_page_holds_every_table_of_report_md(full):
    """Structurally, without a browser: every section and table report.md has is on the
    page, shares are percentages, every chart decodes to a drawn image, and the CSS keeps
    the page, its tables and its images within a 1280 px window."""
    markdown = (full / "report.md").read_text(encoding="utf-8")
    text = (full / "report.html").read_text(encoding="utf-8")
    page, headings = _parse(text), _Headings()
    headings.feed(text)
    sections = [line[3:] for line in markdown.splitlines() if line.startswith("## ")]
    assert {"Suspected proxies", "Monotonicity expectations", "Adversarial shift",
            "Feature sensitivity", "Rows most easily pushed across the threshold 3"} <= set(
        sections)
    assert set(sections) <= set(headings.h2)
    method = next(line for line in markdown.splitlines() if line.startswith("- Method: "))
    assert method[len("- Method: "):].replace("`", "") in html.unescape(text)
    # Every markdown table's header row has its table on the page (same cells).
    md_headers = [[c.strip() for c in line.strip("|").split("|")]
                  for i, line in enumerate(markdown.splitlines())
                  if line.startswith("| ") and markdown.splitlines()[i + 1].startswith("|-")]
    html_headers = _table_headers(text)
    for header in md_headers:
        assert header in html_headers or header[:-1] in html_headers, header
    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    # shares, per-row spread, suspects, monotonicity, robustness, linearity
    assert len(images) == 6
    for src in images:
        pixels = imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert pixels.shape[1] == 750 and pixels[:, :, :3].std() > 0.05  # drawn, not blank
    css = headings.css.replace("\n", "")
    body = re.search(r"body\{[^}]*max-width:(\d+)rem", css)
    assert body and int(body.group(1)) * 16 <= WINDOW - 64
    assert "figure img{max-width:100%" in css and "max-width:100%" in css.split("table{")[1]
    assert "overflow-wrap:anywhere" in css
    sensitivity = _table_after(text, "Feature sensitivity")
    assert all(row[2].endswith("%") for row in sensitivity[1:])
    assert "['" not in text and '["' not in text


def _table_headers(text: str) -> list[list[str]]:
    headers = []
    for table in re.findall(r"<table[^>]*>(.*?)</table>", text, flags=re.S):
        cells = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", table, flags=re.S)
        headers.append([html.unescape(c) for c in cells])
    return headers


def _table_after(text: str, heading: str) -> list[list[str]]:
    part = text.split(f"<h2>{heading}</h2>", 1)[1]
    table = re.search(r"<table[^>]*>(.*?)</table>", part, flags=re.S).group(1)
    return [[html.unescape(re.sub("<[^>]+>", "", c)) for c in
             re.findall(r"<t[hd](?: [^>]*)?>(.*?)</t[hd]>", row, flags=re.S)]
            for row in re.findall(r"<tr(?: [^>]*)?>(.*?)</tr>", table, flags=re.S)]


# Run in the browser on a copy of the page (its policy forbids scripts): what overflows the
# 1280 px window or its container, and which images did not draw.
_PROBE = """<script>
window.addEventListener('load', () => {
  const wide = [];
  for (const el of document.body.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if (box.right > window.innerWidth + 0.5 || el.scrollWidth > el.clientWidth + 1
        && getComputedStyle(el).overflowX !== 'visible') wide.push(el.tagName + ' ' +
        (el.textContent || '').slice(0, 60));
  }
  const images = [...document.images].map(i => [i.naturalWidth, i.naturalHeight,
                                                 Math.round(i.getBoundingClientRect().width)]);
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({scroll: document.documentElement.scrollWidth,
                                      inner: window.innerWidth, wide, images});
  document.body.appendChild(probe);
});
</script>"""


@needs_chromium
def test_chromium_shows_every_chart_and_nothing_overflows_1280px(full, tmp_path):
    text = (full / "report.html").read_text(encoding="utf-8")
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text)
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    done = _chromium(f"--window-size={WINDOW},2000", "--virtual-time-budget=10000",
                     "--dump-dom", probe.as_uri(), cwd=tmp_path)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, flags=re.S)
    assert found, done.stderr[-2000:]
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["inner"] == WINDOW
    assert seen["scroll"] <= WINDOW, seen
    assert seen["wide"] == [], seen["wide"]
    assert len(seen["images"]) == 6
    for width, height, shown in seen["images"]:
        assert width == 750 and height > 100 and 0 < shown <= WINDOW


def _markdown_tables(markdown: str) -> list[list[list[str]]]:
    """Each pipe table of a markdown file: its rows of cells, the separator row left out."""
    tables: list[list[list[str]]] = []
    previous = ""
    for line in markdown.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append([c.strip() for c in line.strip().strip("|").split("|")])
        previous = line
    return tables


def _html_tables(text: str) -> list[list[list[str]]]:
    return [[[html.unescape(re.sub("<[^>]+>", "", c)).strip() for c in
              re.findall(r"<t[hd](?: [^>]*)?>(.*?)</t[hd]>", row, flags=re.S)]
             for row in re.findall(r"<tr(?: [^>]*)?>(.*?)</tr>", table, flags=re.S)]
            for table in re.findall(r"<table[^>]*>(.*?)</table>", text, flags=re.S)]


def test_comparison_page_holds_every_table_of_comparison_md(tmp_path):
    """comparison.html has each table comparison.md has, cell for cell: the before/after
    table and the rows where the two models disagree most (once missing from the page)."""
    assets = write_assets(tmp_path / "assets")
    save_exported(Linear(tensor([WEIGHTS[0] / 4, WEIGHTS[1], -WEIGHTS[2]]), n_features=3),
                  tmp_path / "old.pt2", n_features=3)
    config = write_config(tmp_path / "audit.yaml", assets, max_share=0.95,
                          extra="compare:\n  bootstrap_samples: 20\n",
                          report="report:\n  dir: out\n  formats: [markdown, html]\n")
    result, _ = run_compare(load_config(config), tmp_path / "old.pt2", assets / "scorer.pt2")
    markdown = (tmp_path / "out" / "comparison.md").read_text(encoding="utf-8")
    page = _html_tables((tmp_path / "out" / "comparison.html").read_text(encoding="utf-8"))
    tables = _markdown_tables(markdown)
    assert [t[0] for t in tables] == [
        ["feature", "share old", "share new", "change (points)", "95% interval",
         "rank old -> new", "gate"],
        ["id", "score old", "score new", "cosine"]]
    for table in tables:
        assert table in page, table[0]
    rows = result.overall["score"].least_agreeing_rows
    assert rows and [r[0] for r in tables[1][1:]] == [str(r.id) for r in rows]
    # Lowest cosine first: the rows whose drivers differ most lead.
    cosines = [float(r[3]) for r in tables[1][1:]]
    assert cosines == sorted(cosines) and cosines[0] < 1
