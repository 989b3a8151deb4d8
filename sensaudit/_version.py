"""The package version, in a module of its own so any module can import it without
depending on the order ``sensaudit/__init__`` imports things in."""

__version__ = "0.1.0"
