"""The command line: `sensaudit run`, `compare`, `resample`, `init` and their console output."""
