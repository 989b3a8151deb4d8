"""Write the small model files tests/test_torch_versions.py loads under every torch it runs on.

Run under the torch whose files you want to keep (`make version-fixtures` runs it under the
newer torch of `make test-torch-next`); it writes ``scorer.pt2`` (torch.export), ``scorer.pt``
(TorchScript) and ``expected.json`` (the scores of fixed rows, the torch version that wrote
them) into ``tests/model_files/torch<version>/``. Seeded: the same torch writes the same
scores. Each file is a few kilobytes.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch
from torch import nn

ROWS = [[0.0, 0.5, -1.0, 2.0], [1.0, -0.5, 0.25, 0.0], [-2.0, 3.0, 1.5, -0.75]]


def scorer() -> nn.Module:
    torch.manual_seed(2026)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Dropout(0.1),
                         nn.LayerNorm(8), nn.Linear(8, 1), nn.Sigmoid()).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/model_files"))
    args = parser.parse_args()
    version = torch.__version__.split("+")[0]
    folder = args.out / f"torch{version}"
    folder.mkdir(parents=True, exist_ok=True)
    model = scorer()
    rows = torch.tensor(ROWS)
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (rows,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(folder / "scorer.pt2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated from 2.14 on
        torch.jit.save(torch.jit.script(model), str(folder / "scorer.pt"))
    with torch.no_grad():
        scores = model(rows).squeeze(1).tolist()
    expected = {"torch": torch.__version__, "rows": ROWS, "scores": scores}
    (folder / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
