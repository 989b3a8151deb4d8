"""Screenshots of the demo's HTML reports for the docs (`make docs-screenshots`).

Takes the first screen (1280 x 900) of the demo's (`make demo`, in sensaudit-demo/)
reports/scorer_v1/report.html and reports/compare/comparison.html with headless Chromium,
reduces each to a 128-colour palette (the pages are text and flat colours; a full-colour PNG
of one screen is over 150 KB), and
writes docs/report-html.png and docs/comparison-html.png. A browser's fonts differ from
machine to machine, so the pixels cannot be checked; instead docs/screenshots.json records the
*structure* of each page they were taken from (its elements and their classes, without the
text, the numbers or the embedded charts), and tests/test_docs.py fails when the demo's pages
no longer have that structure: then the screenshots are older than the report they show.

Run from the repository's root after the demo (`make docs-screenshots` runs it first).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOTS = {"report-html.png": "sensaudit-demo/reports/scorer_v1/report.html",
         "comparison-html.png": "sensaudit-demo/reports/compare/comparison.html"}
RECORD = ROOT / "docs" / "screenshots.json"
WINDOW = (1280, 900)
COLOURS = 128


class _Skeleton(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = dict(attrs).get("class") or ""
        self.parts.append(f"<{tag} {classes}>".replace(" >", ">"))

    def handle_endtag(self, tag: str) -> None:
        self.parts.append(f"</{tag}>")


def structure(page: Path) -> str:
    """A digest of the page's elements and classes in order: what a screenshot shows the
    layout of. Text, numbers and attribute values other than classes (the charts' data URIs)
    are left out, so another run of the same report code gives the same digest."""
    parser = _Skeleton()
    parser.feed(page.read_text())
    return hashlib.sha256("".join(parser.parts).encode()).hexdigest()


def _shoot(page: Path, out: Path, chromium: str) -> None:
    from PIL import Image

    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "shot.png"
        flags = ["--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                 "--disable-dev-shm-usage", f"--user-data-dir={scratch}/profile",
                 f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={raw}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        subprocess.run([chromium, *flags, page.resolve().as_uri()], check=True,
                       capture_output=True, timeout=180)
        with Image.open(raw) as image:
            small = image.convert("RGB").quantize(COLOURS, method=Image.Quantize.MEDIANCUT)
            small.save(out, optimize=True)


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("docs_screenshots: headless Chromium is not installed (apt-get install chromium)")
        return 2
    record = {}
    for name, source in SHOTS.items():
        page = ROOT / source
        if not page.is_file():
            print(f"docs_screenshots: {source} is missing: run `make demo` first")
            return 2
        _shoot(page, ROOT / "docs" / name, chromium)
        record[name] = {"page": source, "structure": structure(page)}
        print(f"wrote docs/{name} ({(ROOT / 'docs' / name).stat().st_size:,} bytes)")
    RECORD.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
