"""The CI entry point: `.ci/run` runs the README's test command, and its log says which library versions it tested."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys

from conftest import REPO_ROOT


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    command = re.search(r"Run the tests .*?```bash\n(.*?)\n```", readme, re.DOTALL).group(1)
    assert command.splitlines()[-1] == (REPO_ROOT / ".ci" / "run").read_text().splitlines()[-1]
    assert ".ci/versions.py" in command and "pytest" in command


def test_versions_lists_the_key_dependencies_with_their_installed_versions():
    result = subprocess.run([sys.executable, str(REPO_ROOT / ".ci" / "versions.py")], capture_output=True, text=True,
                            timeout=60, check=True)
    pins = dict(line.rsplit(": ", 1) for line in result.stdout.splitlines()[1:])
    installed = {re.match(r"[\w.-]+", pin).group(): version for pin, version in pins.items()}
    for name in ("jax", "flax", "orbax-checkpoint", "huggingface_hub", "numpy"):
        assert installed[name] == importlib.metadata.version(name), name
    assert result.stdout.startswith(f"python {sys.version.split()[0]}\n")
