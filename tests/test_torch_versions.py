"""Model files written by one torch release load and score the same under another, untrusted.

tests/model_files/torch<version>/ holds a .pt2 and a TorchScript file written by that release
(scripts/make_version_fixtures.py) and the scores it computed. CI runs this under the pinned
torch; `make test-torch-next` runs it (with the other model-file tests) under the next release,
so each release's files are loaded by the other. The sample models (written by the pinned
torch) are audited under both too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sensaudit import load_model
from sensaudit.inputs import pt2_safety, torchscript_safety
from sensaudit.settings.sections import ModelConfig

ROOT = Path(__file__).resolve().parents[1]
WRITTEN_BY = sorted((ROOT / "tests" / "model_files").glob("torch*"))


def test_files_from_more_than_one_release_are_kept():
    assert len(WRITTEN_BY) >= 2, WRITTEN_BY


@pytest.mark.parametrize("folder", WRITTEN_BY, ids=lambda f: f.name)
@pytest.mark.parametrize("name", ["scorer.pt2", "scorer.pt"])
def test_a_file_from_each_release_loads_untrusted_and_scores_as_written(folder, name):
    expected = json.loads((folder / "expected.json").read_text())
    assert expected["torch"].startswith(folder.name.removeprefix("torch"))
    check = pt2_safety.check_archive if name.endswith(".pt2") else torchscript_safety.check_archive
    check(folder / name)  # the checks alone, then the loader
    model = load_model(ModelConfig(path=folder / name, device="cpu"))
    scores = model.module(torch.tensor(expected["rows"], dtype=torch.float32))
    torch.testing.assert_close(scores.reshape(-1).tolist(), expected["scores"], rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("name", ["scorer_v1.pt2", "scorer_v2.pt2"])
def test_the_sample_models_load_untrusted(name):
    path = ROOT / "sensaudit/sample/sample_data" / name
    pt2_safety.check_archive(path)
    model = load_model(ModelConfig(path=path, device="cpu"))
    rows = torch.zeros(2, _input_width(path))
    assert torch.isfinite(model.module(rows)).all()


def _input_width(path: Path) -> int:
    program = torch.export.load(str(path))  # a sample model: checked above
    placeholder = next(n for n in program.graph.nodes
                       if n.op == "placeholder" and n.name in program.graph_signature.user_inputs)
    return int(placeholder.meta["val"].shape[1])
