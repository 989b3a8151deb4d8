"""report.html is one self-contained page: no script, nothing loaded from outside, the charts
embedded. Opened in headless Chromium (Debian's package; .ci/run installs it) it draws its
charts, and the numbers under each chart, read from the page's DOM as the browser built it, are
sensitivity.csv's."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from audit_setup import write_assets, write_config

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


def test_the_page_loads_nothing_from_outside(report):
    text = (report / "report.html").read_text(encoding="utf-8")
    page = _parse(text)
    names = {tag for tag, _ in page.tags}
    assert not names & {"script", "link", "iframe", "object", "embed", "base"}
    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    assert len(images) == 3  # shares, contributions, and the suspects check's table
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
    assert shown["share"].astype(float).tolist() == csv["share"].tolist()


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
    assert shown["share"].astype(float).tolist() == csv["share"].tolist()
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
    for column in ("share_old", "share_new", "share_new_low", "share_new_high"):
        assert shown[column].astype(float).tolist() == csv[column].tolist()
