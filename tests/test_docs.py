"""The docs site (mkdocs.yml, docs/): every method and check has its page, every page is in
the nav, local links resolve, the README stays short, the worked examples and CI recipes run as
written, and the charts and screenshots are the demo's own output."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sensaudit.checks import CHECKS
from sensaudit.config.keys import owners_in
from sensaudit.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
# Where `make demo` (sensaudit demo) copies the sample and writes the reports.
DEMO = ROOT / "sensaudit-demo"
SAMPLE_DATA = ROOT / "sensaudit" / "sample" / "sample_data"


def _nav_pages() -> list[str]:
    def walk(entry: object) -> list[str]:
        if isinstance(entry, str):
            return [entry]
        if isinstance(entry, dict):
            return [page for value in entry.values() for page in walk(value)]
        if isinstance(entry, list):
            return [page for item in entry for page in walk(item)]
        raise AssertionError(f"unexpected nav entry {entry!r}")

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    return walk(config["nav"])


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(r"```" + language + r"\n(.*?)```", text, flags=re.S)


# -- the site's shape ------------------------------------------------------------------------


def test_the_site_builds_strictly_in_ci():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["strict"] is True and config["theme"]["name"] == "material"
    assert config["docs_dir"] == "docs" and config["site_dir"] == "site"
    # Only the search plugin: nothing that fetches at build time (social cards, privacy).
    assert config["plugins"] == ["search"]
    assert all(config["validation"][key] == "warn"
               for key in ("omitted_files", "unrecognized_links", "anchors"))
    makefile = (ROOT / "Makefile").read_text()
    build = "NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet"
    test_target = re.search(r"^test: \$\(STAMP\)\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert test_target is not None and f"\t{build}\n" in test_target.group(1)
    assert re.search(r"^docs: \$\(STAMP\)\n\t" + re.escape(build) + "$", makefile, flags=re.M)
    assert "/site/" in (ROOT / ".gitignore").read_text().splitlines()
    # The dev extra brings mkdocs-material, pinned with what it pulls.
    pyproject = (ROOT / "pyproject.toml").read_text()
    dev = re.search(r"^dev = \[(.*?)\]", pyproject, flags=re.M | re.S)
    assert dev is not None and '"mkdocs-material>=' in dev.group(1)
    pins = (ROOT / "constraints.txt").read_text().splitlines()
    for package in ("mkdocs-material", "mkdocs", "pymdown-extensions", "Markdown"):
        assert any(line.startswith(f"{package}==") for line in pins), package


@pytest.mark.skipif(importlib.util.find_spec("material") is None,
                    reason="mkdocs-material is not installed (the dev extra installs it)")
def test_mkdocs_builds_the_site_without_a_warning(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "security.html").read_text().count("What it does not promise")


def test_every_method_and_check_has_its_page_with_its_options_table():
    nav = _nav_pages()
    pages = [f"methods/{name}.md" for name in METHODS] + [f"checks/{c.name}.md" for c in CHECKS]
    for page, owner in zip(pages, [*METHODS, *(c.name for c in CHECKS)], strict=True):
        assert (DOCS / page).is_file(), f"docs/{page} is missing"
        assert page in nav, f"docs/{page} is not in mkdocs.yml's nav"
        # Its options come from the declarations (python -m sensaudit.config.keys).
        assert owners_in((DOCS / page).read_text()) == [owner], page


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    nav = _nav_pages()
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    on_disk = {str(page.relative_to(DOCS)) for page in _pages()}
    assert on_disk - set(nav) == set(), "pages left out of the nav (orphans)"
    assert set(nav) - on_disk == set(), "nav entries without a page"


def test_the_readme_is_under_15_kb_and_links_into_the_docs():
    text = README.read_text()
    assert len(text.encode()) < 15_000
    linked = set(re.findall(r"\]\((docs/[\w/.-]+\.md)", text))
    assert {"docs/index.md", "docs/usage.md", "docs/configuration.md", "docs/ci.md",
            "docs/concepts.md", "docs/methods/index.md", "docs/checks/index.md"} <= linked
    assert "package index" in text  # says where it is not, and how to install instead


# -- links -----------------------------------------------------------------------------------


def _slug(title: str) -> str:
    """Python-Markdown's toc slug, as mkdocs makes a heading's anchor."""
    title = re.sub(r"<[^>]+>|`", "", title)
    title = re.sub(r"[^\w\s-]", "", title).strip().lower()
    return re.sub(r"[-\s]+", "-", title)


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#{1,6} (.+?)\s*$", text, flags=re.M)}


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", [README, ROOT / "SECURITY.md", ROOT / "CHANGELOG.md",
                                  *_pages()], ids=lambda p: str(p.relative_to(ROOT)))
def test_local_links_and_anchors_resolve(page):
    for link in _links(page):
        if re.match(r"[a-z]+:", link):
            continue  # https:, mailto:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.relative_to(ROOT)}: {link} does not exist"
        if page.is_relative_to(DOCS):
            assert target.is_relative_to(DOCS), (
                f"{page.relative_to(ROOT)}: {link} leaves docs/ (the site cannot serve it)")
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), f"{page.relative_to(ROOT)}: no #{anchor}"


def test_the_link_checker_sees_a_broken_link(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[a](missing.md) [b](#title) `[c](x.md)`\n")
    assert _links(page) == ["missing.md", "#title"]
    assert _anchors(page) == {"title"}
    assert _slug("The model's inputs: `x`") == "the-models-inputs-x"


# -- worked examples and recipes, run as written ---------------------------------------------


@pytest.mark.parametrize("name", list(METHODS))
def test_each_methods_worked_example_runs(name):
    blocks = _code_blocks((DOCS / "methods" / f"{name}.md").read_text(), "python")
    assert blocks and any("assert" in block for block in blocks), name
    for block in blocks:
        exec(compile(block, f"docs/methods/{name}.md", "exec", dont_inherit=True), {})  # noqa: S102


def _section(page: Path, title: str) -> str:
    text = page.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 4)
    return text[start: end if end != -1 else len(text)]


def _recipe(title: str) -> dict:
    blocks = _code_blocks(_section(DOCS / "ci.md", title), "yaml")
    assert len(blocks) == 1, f"the {title} section shows one recipe"
    loaded: dict = yaml.safe_load(blocks[0])
    return loaded


def _audit_argv(commands: list[str]) -> list[str]:
    audit = [shlex.split(c) for c in commands if c.startswith("sensaudit ")]
    assert len(audit) == 1, commands
    return audit[0]


def _check_flags(argv: list[str]) -> None:
    """Every flag is an option of that command and in docs/usage.md's synopsis."""
    import typer

    from sensaudit.cli.app import app

    synopsis = re.search(r"## Synopsis\n\n```text\n(.*?)```", (DOCS / "usage.md").read_text(),
                         flags=re.S)
    assert synopsis is not None
    lines = re.sub(r"\n {4}", " ", synopsis.group(1)).splitlines()
    documented = next(line for line in lines if line.startswith(f"sensaudit {argv[1]} "))
    command = typer.main.get_command(app).commands[argv[1]]  # type: ignore[attr-defined]
    options = {o for p in command.params for o in p.opts}
    for flag in (a for a in argv if a.startswith("-")):
        assert flag in documented and flag in options, flag


def _installs_from_the_repository(commands: list[str]) -> None:
    """torch from the CPU index first, then sensaudit with the charts extra, not by its name
    from a package index (it is on none)."""
    installs = [shlex.split(c) for c in commands if c.startswith("pip install")]
    assert len(installs) == 2, commands
    assert installs[0][2:] == ["torch", "--index-url", "https://download.pytorch.org/whl/cpu"]
    (target,) = installs[1][2:]
    # A checkout's folder, a wheel, or the repository's URL; never the bare name.
    assert target.startswith(("./", "/")) or " @ git+" in target or ".whl[" in target, target
    assert "[charts]" in target and "charts = [" in (ROOT / "pyproject.toml").read_text()


def _run_as_written(argv: list[str], tmp_path, monkeypatch) -> Path:
    """The audit command run on a config `sensaudit init` wrote for the sample model; returns
    the report folder."""
    from typer.testing import CliRunner

    from sensaudit.cli.app import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner(env={"COLUMNS": "1000"})
    init = runner.invoke(app, ["init", str(SAMPLE_DATA / "scorer_v1.pt2"),
                               str(SAMPLE_DATA / "ad_copy_eval.csv"), "--label",
                               "quality"])
    assert init.exit_code == 0, init.output
    ran = runner.invoke(app, argv[1:])
    assert ran.exit_code == 0, ran.output  # no proxies declared yet: nothing to fail
    out = argv[argv.index("--out") + 1] if "--out" in argv else "reports/sensaudit"
    return tmp_path / out


def _uploaded(folder: Path, root: Path, patterns: list[str]) -> set[str]:
    """The files an upload of ``folder`` takes, hidden ones included, less those matching an
    exclusion pattern (relative to ``root``; `**/` matches any folders, none included)."""
    taken = set()
    for path in folder.rglob("*"):
        name = str(path.relative_to(root))
        if path.is_file() and not any(fnmatch.fnmatch(name, p)
                                      or fnmatch.fnmatch(name, p.replace("**/", ""))
                                      for p in patterns):
            taken.add(path.name)
    return taken


def _only_report_files(folder: Path, uploaded: set[str]) -> None:
    manifest = json.loads((folder / ".sensaudit-manifest.json").read_text())
    written = {name for names in manifest["reports"].values() for name in names}
    assert ".sensaudit.lock" not in uploaded
    assert uploaded <= written | {".sensaudit-manifest.json"}, uploaded - written
    assert {"junit.xml", "report.html", "report.md"} <= uploaded


def test_the_github_actions_recipe_installs_from_the_repository_and_uploads_reports_only(
        tmp_path, monkeypatch):
    workflow = _recipe("GitHub Actions")
    assert workflow["permissions"]["checks"] == "write"
    steps = workflow["jobs"]["audit"]["steps"]
    commands = [line.strip() for step in steps for line in step.get("run", "").splitlines()
                if line.strip()]
    _installs_from_the_repository(commands)
    # The repository it installs from is the one a checkout step put there.
    target = next(c for c in commands if "[charts]" in c).split()[-1].strip("'\"")
    checkout = next(s for s in steps if s.get("with", {}).get("path")
                    and target.startswith(f"./{s['with']['path']}["))
    assert checkout["uses"].startswith("actions/checkout@")
    argv = _audit_argv(commands)
    _check_flags(argv)
    # The job fails with the audit (no continue-on-error) and uploads the report either way.
    audit_step = next(s for s in steps if s.get("run", "").startswith("sensaudit "))
    assert "continue-on-error" not in audit_step and "if" not in audit_step
    out = argv[argv.index("--out") + 1]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    junit = next(s for s in steps if "junit" in s.get("uses", ""))
    assert upload["if"] == junit["if"] == "always()"
    paths = upload["with"]["path"].split()
    assert paths[0] == out and "!**/.sensaudit.lock" in paths
    assert junit["with"]["report_paths"] == f"{out}/junit.xml"

    folder = _run_as_written(argv, tmp_path, monkeypatch)
    _only_report_files(folder, _uploaded(folder, tmp_path,
                                         [p[1:] for p in paths if p.startswith("!")]))


def test_the_gitlab_recipe_installs_from_the_repository_and_uploads_reports_only(
        tmp_path, monkeypatch):
    job = _recipe("GitLab CI")["sensaudit"]
    commands = job["script"]
    _installs_from_the_repository(commands)
    assert " @ git+https://" in next(c for c in commands if "[charts]" in c)
    argv = _audit_argv(commands)
    _check_flags(argv)
    out = argv[argv.index("--out") + 1]
    artifacts = job["artifacts"]
    assert artifacts["when"] == "always"
    assert artifacts["paths"] == [f"{out}/"]
    assert artifacts["reports"]["junit"] == f"{out}/junit.xml"
    assert artifacts["exclude"] == [f"{out}/**/.sensaudit.lock"]

    folder = _run_as_written(argv, tmp_path, monkeypatch)
    _only_report_files(folder, _uploaded(folder, tmp_path, artifacts["exclude"]))


def test_the_pre_commit_recipe_runs_the_audit(tmp_path, monkeypatch):
    (hook,) = _recipe("pre-commit")["repos"][0]["hooks"]
    assert hook["language"] == "system" and hook["pass_filenames"] is False
    assert re.search(hook["files"], "sensaudit.yaml") and re.search(hook["files"],
                                                                    "models/scorer.pt2")
    argv = shlex.split(hook["entry"])
    _check_flags(argv)
    assert "--quiet" in argv
    folder = _run_as_written(argv, tmp_path, monkeypatch)
    assert (folder / "report.md").is_file()


# -- charts and screenshots from the demo's own output ---------------------------------------


def _shown() -> set[Path]:
    """The files the docs' pages link to (images included)."""
    return {(page.parent / link.partition("#")[0]).resolve()
            for page in _pages() for link in _links(page) if not re.match(r"[a-z]+:", link)}


def _docs_charts() -> dict[str, str]:
    """The Makefile's DOCS_CHARTS: report file -> its copy under docs/."""
    makefile = (ROOT / "Makefile").read_text()
    found = re.search(r"^DOCS_CHARTS := (.*?)\n(?!\s)", makefile, flags=re.M | re.S)
    assert found is not None
    pairs = found.group(1).replace("\\\n", " ").split()
    return dict(pair.split(":") for pair in pairs)


def test_every_docs_chart_is_committed_small_and_shown():
    charts = _docs_charts()
    assert charts["compare/chart-compare-shares.png"] == "compare-shares.png"
    assert "](docs/compare-shares.png)" in README.read_text()
    shown = _shown()
    for copy in charts.values():
        path = DOCS / copy
        assert path.is_file() and path.stat().st_size < 100_000, copy
        assert path.resolve() in shown, f"no page shows docs/{copy}"


def _pinned_matplotlib() -> None:
    import matplotlib

    pin = next(line for line in (ROOT / "constraints.txt").read_text().splitlines()
               if line.startswith("matplotlib=="))
    if matplotlib.__version__ != pin.split("==")[1]:
        pytest.skip(f"matplotlib {matplotlib.__version__} is not the pinned {pin}")


def test_the_docs_charts_are_what_the_demo_draws():
    """Where the demo has run in this checkout: tests/test_readme.py's demo test runs it and
    then this check, so CI (a clean clone) always makes it."""
    if not all(path.is_file() for path in _demo_charts().values()):
        pytest.skip("the demo has not run in this checkout")
    assert_docs_charts_are_the_demos()


def _demo_charts() -> dict[str, Path]:
    return {report: DEMO / "reports" / report for report in _docs_charts()
            if not report.startswith("docs_more_checks/")}


def assert_docs_charts_are_the_demos() -> None:
    """Each committed chart is `make docs-chart`'s copy of the demo's
    (docs/examples/more_checks.yaml's are checked by
    test_the_more_checks_example_gives_the_pages_figures)."""
    charts = {report: copy for report, copy in _docs_charts().items()
              if not report.startswith("docs_more_checks/")}
    drawn = _demo_charts()
    _pinned_matplotlib()
    for report, copy in charts.items():
        assert drawn[report].read_bytes() == (DOCS / copy).read_bytes(), \
            f"docs/{copy} is not the demo's {report}: run `make docs-chart`"


@pytest.mark.slow
def test_the_more_checks_example_gives_the_pages_figures(tmp_path):
    """docs/examples/more_checks.yaml, run as `make docs-chart` runs it: the figures the check
    pages quote, and their charts."""
    done = subprocess.run([sys.executable, "-m", "sensaudit", "run",
                           "docs/examples/more_checks.yaml", "--out", str(tmp_path), "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    report = (tmp_path / "report.md").read_text()
    pages = {name: (DOCS / "checks" / f"{name}.md").read_text()
             for name in ("one_hot_levels", "linearity", "layer_health", "completeness")}
    quoted = re.search(r'report.md: "(.*?)", and the audit', pages["one_hot_levels"], re.S)
    assert quoted is not None
    assert " ".join(quoted.group(1).replace("**", "").split()) in " ".join(
        report.replace("**", "").split())
    for name in ("linearity", "layer_health"):
        sentence = re.search(r'"(.*?)"', pages[name].split("## Example")[1], re.S)
        assert sentence is not None
        assert " ".join(sentence.group(1).split()) in " ".join(report.split()), name
    warning = _code_blocks(pages["completeness"].split("## Example")[1], "text")[0].strip()
    assert warning in done.stdout
    _pinned_matplotlib()
    for report_file, copy in _docs_charts().items():
        if report_file.startswith("docs_more_checks/"):
            drawn = tmp_path / report_file.split("/", 1)[1]
            assert drawn.read_bytes() == (DOCS / copy).read_bytes(), \
                f"docs/{copy} is not what docs/examples/more_checks.yaml draws: make docs-chart"


def test_the_screenshots_are_small_shown_and_recorded():
    from PIL import Image

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docs_screenshots
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    record = json.loads((DOCS / "screenshots.json").read_text())
    assert set(record) == set(docs_screenshots.SHOTS) == {"report-html.png",
                                                          "comparison-html.png"}
    shown = _shown()
    for name, entry in record.items():
        path = DOCS / name
        assert path.stat().st_size < 150_000, name
        with Image.open(path) as image:
            assert image.size == docs_screenshots.WINDOW
        assert entry["page"] == docs_screenshots.SHOTS[name]
        assert path.resolve() in shown, f"no page shows docs/{name}"
    assert re.search(r"^docs-screenshots: demo\n\t\$\(BIN\)/python scripts/docs_screenshots\.py$",
                     (ROOT / "Makefile").read_text(), flags=re.M)


def test_the_screenshots_are_not_older_than_the_demos_html():
    """Where the demo has run in this checkout: tests/test_readme.py's demo test runs it and
    then this check, so CI (a clean clone) always makes it."""
    record = json.loads((DOCS / "screenshots.json").read_text())
    if not all((ROOT / entry["page"]).is_file() for entry in record.values()):
        pytest.skip("the demo has not run in this checkout")
    assert_screenshots_are_of_the_demos_html()


def assert_screenshots_are_of_the_demos_html() -> None:
    """A browser's fonts differ between machines, so the pixels are not compared: the
    structure of each page the screenshots were taken from (its elements and classes) must be
    the structure of the page the demo writes now. When the HTML report changes, `make
    docs-screenshots` retakes them."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docs_screenshots
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    record = json.loads((DOCS / "screenshots.json").read_text())
    pages = {name: ROOT / entry["page"] for name, entry in record.items()}
    for name, page in pages.items():
        assert docs_screenshots.structure(page) == record[name]["structure"], \
            f"docs/{name} shows an older {page.name}: run `make docs-screenshots`"


def test_the_structure_digest_sees_a_layout_change_but_not_new_numbers(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docs_screenshots
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    page = tmp_path / "p.html"
    page.write_text('<h1 class="a">39.0%</h1><img src="data:image/png;base64,AAA">')
    before = docs_screenshots.structure(page)
    page.write_text('<h1 class="a">1.6%</h1><img src="data:image/png;base64,BBB">')
    assert docs_screenshots.structure(page) == before
    page.write_text('<h1 class="a">1.6%</h1><table></table><img src="x">')
    assert docs_screenshots.structure(page) != before
