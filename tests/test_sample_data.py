"""The shipped sample is small and is exactly what the seeded script makes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = ROOT / "sensaudit" / "sample" / "sample_data"


def test_the_sample_is_small():
    """It ships in every wheel (sensaudit/sample/: the data, the scorers, the configs)."""
    sample = ROOT / "sensaudit" / "sample"
    files = [p for p in sample.rglob("*") if p.is_file() and "reports" not in p.parts]
    assert len(files) == 7
    assert sum(p.stat().st_size for p in files) < 600_000


@pytest.mark.slow
def test_script_regenerates_the_shipped_csvs_byte_for_byte(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_sample_data.py"),
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr  # its own acceptance audit passed
    for name in ("ad_copy_eval.csv", "ad_copy_train.csv"):
        assert (tmp_path / name).read_bytes() == (SAMPLE_DATA / name).read_bytes()
