"""`python -m sensaudit` run from the folder that holds this checkout.

When the checkout's folder is named sensaudit and Python starts in the folder above it, the
checkout itself is found first as a package named sensaudit (a namespace package with no
code), so `python -m sensaudit` would fail with "No module named sensaudit.__main__", or run an
installed copy instead of this one. This file makes the checkout's folder run the package it
holds. It is not part of the installed package.
"""

import runpy
import sys
from pathlib import Path

CHECKOUT = str(Path(__file__).resolve().parent)

# Forget the namespace package, then import the real one from the checkout.
for name in [n for n in sys.modules if n == "sensaudit" or n.startswith("sensaudit.")]:
    del sys.modules[name]
sys.path.insert(0, CHECKOUT)
runpy.run_module("sensaudit", run_name="__main__", alter_sys=True)
