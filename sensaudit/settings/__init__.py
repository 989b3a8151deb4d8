"""The typed settings of an audit, each section a frozen dataclass that checks its own values."""
