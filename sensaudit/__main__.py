"""`python -m sensaudit` runs the CLI."""

from .cli import app

app(prog_name="sensaudit")
