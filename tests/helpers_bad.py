"""Builders for the bad-input tests: tiny models, data files and configs in a temporary folder.

Every model here reads 3 features (a, b, c) and is float32. ``Scorer`` is the good one:
y = a + 2 b - c, so dy/dx = [1, 2, -1] in every row.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from sensaudit.cli.app import app

FEATURES = ("a", "b", "c")
ROWS = [
    ("r1", 1.0, 2.0, 3.0, 1),
    ("r2", 2.0, 1.0, 0.5, 0),
    ("r3", 0.5, 3.0, 1.0, 1),
    ("r4", 4.0, 0.0, 2.0, 0),
    ("r5", 1.5, 2.5, 0.0, 1),
    ("r6", 3.0, 1.5, 1.5, 0),
]
HEADER = ("id", *FEATURES, "label")

# The source of the model classes that state_dict configs name ("badmodels:Scorer"), written
# beside the model file so that model.class can import it.
MODELS_SOURCE = textwrap.dedent('''
    import torch
    from torch import nn


    class Scorer(nn.Module):
        """y = w.x with w = [1, 2, -1]."""

        def __init__(self, n_features=3):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([1.0, 2.0, -1.0][:n_features]))

        def forward(self, x):
            return x @ self.w


    class Other(nn.Module):
        """A different architecture: its state_dict has other keys."""

        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 1)

        def forward(self, x):
            return self.layer(x).squeeze(1)


    class Broken(nn.Module):
        def __init__(self):
            raise ValueError("constructor exploded")
''')


class Scorer(nn.Module):
    """y = w.x with w = [1, 2, -1]  ->  dy/dx = w in every row."""

    def __init__(self, n_features: int = 3):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0, -1.0, 0.5][:n_features]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


class Fn(nn.Module):
    """Wraps a function of x (and the Scorer's weights), to build misbehaving models."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.w = nn.Parameter(torch.tensor([1.0, 2.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.w
        if self.kind == "shape":  # [rows, features, 1]: not one score vector per row
            return x.unsqueeze(-1)
        if self.kind == "scalar":  # one number for the whole batch
            return y.sum()
        if self.kind == "integer":
            return y.round().to(torch.int64)
        if self.kind == "int_cast":  # float scores computed from integer-cast inputs
            return x.to(torch.int64).to(x.dtype) @ self.w
        if self.kind == "argmax":
            return x.argmax(dim=1).to(x.dtype)
        if self.kind == "detach":
            return x.detach() @ self.w.detach()
        if self.kind == "constant":  # a gradient path whose gradients are all zero
            return x.sum(1) * 0.0 + 1.0
        if self.kind == "nan_row":  # NaN score (and gradient) where a > 3.5 (row r4)
            return torch.where(x[:, 0] > 3.5, torch.full_like(y, float("nan")), y)
        if self.kind == "sqrt":  # finite score, infinite gradient where a == 0
            return torch.sqrt(x[:, 0]) + x[:, 1] - x[:, 2]
        if self.kind == "all_nan":
            return y * float("nan")
        raise ValueError(self.kind)


class Payload:
    """Unpickling this calls ``exec``, which writes ``marker``: proof that a load ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


def payload_bytes(marker: Path) -> bytes:
    """A torch.save'd malicious object (zip format, as torch.save writes by default)."""
    buffer = io.BytesIO()
    torch.save(Payload(marker), buffer)
    return buffer.getvalue()


def tamper_pt2(source: Path, target: Path, edit) -> Path:
    """Copy a .pt2 archive, passing every member through ``edit(name, bytes) -> bytes``."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        for info in src.infolist():
            out.writestr(info, edit(info.filename, src.read(info.filename)))
    return target


def export(model: nn.Module, path: Path, n_features: int = 3) -> Path:
    """torch.export with a dynamic batch dimension, saved to ``path`` (.pt2)."""
    example = (torch.ones(4, n_features),)
    program = torch.export.export(model, example,
                                  dynamic_shapes=({0: torch.export.Dim("rows")},))
    torch.export.save(program, str(path))
    return path


def script(model: nn.Module, path: Path) -> Path:
    """torch.jit.script and save (TorchScript keeps detach and integer casts in its graph)."""
    torch.jit.save(torch.jit.script(model), str(path))
    return path


def state_dict(path: Path, state: dict | None = None) -> Path:
    """Save a state_dict plus badmodels.py beside it (for model.class 'badmodels:...')."""
    (path.parent / "badmodels.py").write_text(MODELS_SOURCE, encoding="utf-8")
    torch.save(state if state is not None else Scorer().state_dict(), str(path))
    return path


def write_csv(path: Path, rows: list[tuple] | None = None, header: tuple = HEADER) -> Path:
    """Write ``rows`` (default ROWS) under ``header``; None cells are left empty."""
    lines = [",".join(header)]
    for row in ROWS if rows is None else rows:
        lines.append(",".join("" if v is None else str(v) for v in row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def config(tmp: Path, **sections: Any) -> dict:
    """A valid config dict for model.pt2 and data.csv in ``tmp``; ``sections`` override
    whole sections (pass ``model=None`` to drop one)."""
    cfg: dict[str, Any] = {
        "model": {"path": "model.pt2"},
        "data": {"path": "data.csv", "id": "id", "label": "label"},
        "audit": {"proxies": [{"feature": "c", "max_share": 0.9}]},
        "report": {"dir": "reports"},
    }
    for key, value in sections.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    return cfg


def write_config(tmp: Path, cfg: dict | str, name: str = "audit.yaml") -> Path:
    path = tmp / name
    text = cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def good_setup(tmp: Path) -> Path:
    """A good model, data and config in ``tmp``; returns the config path."""
    export(Scorer(), tmp / "model.pt2")
    write_csv(tmp / "data.csv")
    return write_config(tmp, config(tmp))


runner = CliRunner()


def cli(*args: str):
    """Run ``sensaudit ARGS`` in-process. Returns typer's Result (exit_code, stdout, stderr)."""
    return runner.invoke(app, list(args))


def cli_error(*args: str) -> str:
    """Run the CLI, check it failed with exit 2 and one ``Error: `` line; return the message."""
    result = cli(*args)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"unhandled {result.exception!r}\n{result.stderr}")
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0][len("Error: "):]


def subprocess_run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m sensaudit ARGS`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "sensaudit", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)
