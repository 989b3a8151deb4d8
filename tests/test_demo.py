"""`sensaudit demo`: copies the packaged sample out without overwriting anything, runs the
story's steps inside the folder, and fails with one line when the story does not hold. The
whole story is run by tests/test_readme.py (`make demo` runs this command) and, from an
installed wheel, by tests/test_packaging.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sensaudit.cli import demo
from sensaudit.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sensaudit" / "sample"


def _demo(*args: str):
    return CliRunner().invoke(app, ["demo", *args])


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_the_sample_is_copied_as_the_package_holds_it(tmp_path):
    written = demo.copy_sample(tmp_path / "new" / "demo")
    expected = {f"{folder}/{p.name}": p.read_bytes() for folder in demo.SAMPLE_FOLDERS
                for p in sorted((SAMPLE / folder).iterdir())}
    assert _tree(tmp_path / "new" / "demo") == expected
    assert sorted(str(p.relative_to(tmp_path / "new" / "demo")) for p in written) == sorted(
        expected)
    assert {"configs/scorer_v1.yaml", "configs/scorer_v2.yaml", "sample_data/scorer_v1.pt2",
            "sample_data/scorer_v2.pt2", "sample_data/ad_copy_eval.csv",
            "sample_data/ad_copy_train.csv"} <= set(expected)


@pytest.mark.parametrize("taken", ["configs/scorer_v2.yaml", "sample_data/ad_copy_eval.csv",
                                   "reports"])
def test_a_folder_holding_what_the_demo_writes_is_refused_untouched(tmp_path, taken):
    folder = tmp_path / "mine"
    (folder / taken).parent.mkdir(parents=True, exist_ok=True)
    if taken == "reports":
        (folder / "reports").mkdir()
        (folder / "reports" / "summary.json").write_text("the user's")
    else:
        (folder / taken).write_text("the user's")
    before = _tree(folder)
    result = _demo(str(folder))
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {folder / taken}: already exists; sensaudit demo "
                             "overwrites nothing (give it a new folder: sensaudit demo DIR)\n")
    assert result.stdout == ""
    assert _tree(folder) == before  # refused before anything was copied


def test_a_file_given_as_the_folder_is_refused_untouched(tmp_path):
    given = tmp_path / "notes.txt"
    given.write_text("the user's")
    result = _demo(str(given))
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {given}: not a folder; sensaudit demo copies the sample "
                             "into a folder (a new one, or one without its files)\n")
    assert given.read_text() == "the user's"


def test_the_default_folder_is_sensaudit_demo_in_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sensaudit-demo" / "reports").mkdir(parents=True)
    result = _demo()
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: sensaudit-demo/reports: already exists;")


def test_a_story_that_does_not_hold_says_which_step_in_one_line(tmp_path, monkeypatch):
    """Each step runs through the command line's own entry, inside the folder; the first
    unexpected exit code ends the story: a step's error code is kept, a wrong verdict is 1."""
    folder = tmp_path / "demo"
    folder.mkdir()
    calls: list[tuple[tuple[str, ...], str]] = []
    codes = {"run": 0}

    def invoke(argv):
        calls.append((tuple(argv), os.getcwd()))
        return codes.get(argv[0], 0)

    said: list[str] = []
    assert demo.tell_story(folder, invoke, said.append) == (
        1, "demo: expected scorer_v1 to fail on its suspected proxy copy_length (exit 1), "
           "got 0")
    assert calls == [(("run", "configs/scorer_v1.yaml"), str(folder))]
    assert said == [f"== {demo.STORY[0].heading}"]
    assert Path.cwd() != folder  # back where it was

    calls.clear()
    codes.update(run=1, resample=2)
    assert demo.tell_story(folder, invoke, said.append)[0] == 2  # bad input keeps its code
    codes.update(resample=0)
    assert demo.tell_story(folder, invoke, said.append)[1] == (
        "demo: expected scorer_v2 to pass its audit (exit 0), got 1")
    by_argv = {step.argv: step.expected for step in demo.STORY}
    assert list(by_argv.values()) == [1, 0, 0, 0]  # v1 fails its gate; the rest pass
    assert demo.tell_story(folder, lambda argv: by_argv[tuple(argv)], said.append) == (0, None)


def test_the_command_exits_with_the_reason_when_a_step_fails(tmp_path, monkeypatch):
    """Through the real command line: a step that meets bad input prints its own error, then
    the demo's one-line reason, and the demo exits with the step's code (2)."""
    monkeypatch.setattr(demo, "STORY", (demo.Step("a step", ("run", "configs/none.yaml"), 1,
                                                   "expected the step to fail (exit 1)"),))
    result = _demo(str(tmp_path / "demo"))
    assert result.exit_code == 2
    assert result.stderr == ("Error: configs/none.yaml: config file not found\n"
                             "demo: expected the step to fail (exit 1), got 2\n")
    assert result.stdout.splitlines() == [
        f"copied the sample into {tmp_path / 'demo'}: 7 files in configs/ and sample_data/; "
        "the story runs there", "== a step"]


def test_help_teaches_the_steps_it_runs():
    result = _demo("--help")
    assert result.exit_code == 0
    for step in demo.STORY:
        assert f"  {step.command}\n" in result.stdout  # the commands to type, one a line
    assert "Example:" in result.stdout and "sensaudit demo /tmp/my-demo" in result.stdout
    assert "[default: sensaudit-demo]" in result.stdout
    assert "Exit codes: 0 the story held" in " ".join(result.stdout.split())

