"""`python -m sensaudit` runs the CLI."""

from sensaudit.cli.app import app

app(prog_name="sensaudit")
