"""The docs: every shell command in README.md and docs/*.md runs as written (or its block says why it cannot run
offline), README.md stays a quick start, no table cell is a wall of text, every relative link leads to a file, and
docs/layout.md names every module."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

from conftest import REPO_ROOT

SHELL_DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
ALL_DOCS = [*SHELL_DOCS, REPO_ROOT / "benchmarks" / "README.md", REPO_ROOT / "checkpoints" / "README.md",
            *sorted((REPO_ROOT / "examples").glob("*/README.md")), REPO_ROOT / "tests" / "fixtures" / "README.md"]
NOT_RUN = re.compile(r"^# not run in tests: (\S.*)$", re.MULTILINE)
# The install steps of the README's two commands: CI runs them (.ci/run); here the test's own environment stands in.
INSTALL_STEP = re.compile(r'^(python3 -m venv \.venv|\.venv/bin/pip install -q -e "\.\[[a-z,]+\]")$')
MAX_CELL = 300


def shell_blocks(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line number, text) of each fenced bash block."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in re.finditer(r"^```bash\n(.*?)^```", text,
                                                                                  re.DOTALL | re.MULTILINE)]


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and the install steps dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    result = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if not line or line.startswith("#"):
            continue
        steps = line.split(" && ")
        kept = [step for step in steps if not INSTALL_STEP.match(step)]
        result.append(" && ".join(kept))
    return result


def test_every_shell_block_runs_or_says_why_not():
    blocks = [(path, line, block) for path in SHELL_DOCS for line, block in shell_blocks(path)]
    assert len(blocks) >= 6
    for path, line, block in blocks:
        assert commands(block), f"{path.name}:{line}: a bash block without a command"
        reason = NOT_RUN.search(block)
        assert reason is None or len(reason.group(1)) > 20, f"{path.name}:{line}: say why it cannot run offline"


def test_shell_commands_in_the_docs_run(tmp_path):
    """Each runnable block, in the docs' order, in one scratch folder laid out like the repo (the demo's run is
    reused by the commands after it), with the test's own environment standing in for `.venv`."""
    for name in ("flags", "examples"):
        (tmp_path / name).symlink_to(REPO_ROOT / name)
    (tmp_path / "checkpoints").mkdir()
    for path in (REPO_ROOT / "checkpoints").iterdir():
        (tmp_path / "checkpoints" / path.name).symlink_to(path)
    bin_dir = pathlib.Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    ran = 0
    for path in SHELL_DOCS:
        for line, block in shell_blocks(path):
            if NOT_RUN.search(block):
                continue
            for command in commands(block):
                command = command.replace(".venv/bin/", f"{bin_dir}/")
                result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True,
                                        text=True, timeout=600)
                assert result.returncode == 0, f"{path.name}:{line}: {command}\n{result.stderr[-3000:]}"
                ran += 1
    assert ran >= 8
    assert (tmp_path / "runs" / "demo" / "summary.json").is_file()
    assert (tmp_path / "runs" / "report" / "report.html").is_file()
    assert (tmp_path / "runs" / "act2answer_probe" / "probing.json").is_file()


def table_cells(text: str) -> list[str]:
    cells = []
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|[\s:|-]+", line):
            cells += [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
    return cells


def test_readme_is_a_quick_start_and_no_table_cell_is_a_wall_of_text():
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) < 200
    for path in ALL_DOCS:
        for cell in table_cells(path.read_text()):
            assert len(cell) <= MAX_CELL, f"{path.relative_to(REPO_ROOT)}: a {len(cell)}-character cell: {cell[:80]}"


def test_every_relative_link_leads_to_a_file():
    checked = 0
    for path in ALL_DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            file = (path.parent / target.split("#")[0]).resolve()
            assert file.exists(), f"{path.relative_to(REPO_ROOT)}: link {target} leads nowhere"
            anchor = target.partition("#")[2]
            if anchor:
                prose = re.sub(r"^```.*?^```", "", file.read_text(), flags=re.DOTALL | re.MULTILINE)
                headings = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-")
                            for h in re.findall(r"^#+ (.*)$", prose, re.MULTILINE)}
                assert anchor in headings, f"{path.relative_to(REPO_ROOT)}: link {target}: no such heading"
            checked += 1
    assert checked >= 20


def test_layout_names_every_module():
    """A reader finds a thing by its name: every module of the package is named in docs/layout.md (a CLI module by
    its subcommand, which is its name)."""
    layout = (REPO_ROOT / "docs" / "layout.md").read_text()
    modules = sorted(path for path in (REPO_ROOT / "multinet_jax").rglob("*.py") if path.name != "__init__.py")
    assert len(modules) > 50
    unnamed = [str(path.relative_to(REPO_ROOT)) for path in modules
               if f"`{path.name}`" not in layout and not (path.parent.name == "cli" and f"`{path.stem}`" in layout)
               and f"`multinet_jax/{path.relative_to(REPO_ROOT / 'multinet_jax')}`" not in layout]
    assert not unnamed, f"docs/layout.md does not name {unnamed}"

