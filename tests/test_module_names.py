"""No two modules (or a module and a package) under `multinet_jax/` share a base name, outside a short list of
pairs a reader cannot confuse: a reader who meets `report.` or `errors.` at a call site should know which file it is."""

from __future__ import annotations

import ast
import collections
import pathlib

from multinet_jax import cli

PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1] / "multinet_jax"

# base name -> why the modules that share it are not confused.
ALLOWED = {
    "paligemma": "models/paligemma.py is the model and tokenizers/paligemma.py its tokenizer: the package says which, "
                 "and no module imports both",
}


def names() -> dict[str, list[str]]:
    """Base name -> the modules and packages (paths relative to multinet_jax/) that have it. `__init__.py` and
    `cli/<command>.py` are left out: the latter mirrors the command it runs (`multinet-jax eval` -> cli/eval.py),
    which is where a reader looks for it."""
    commands = {f"cli/{command}.py" for command in cli.COMMANDS}
    found = collections.defaultdict(list)
    for path in sorted(PACKAGE_DIR.rglob("*")):
        relative = path.relative_to(PACKAGE_DIR).as_posix()
        if "__pycache__" in relative or relative in commands or path.name == "__init__.py":
            continue
        if path.is_dir():
            found[path.name].append(relative + "/")
        elif path.suffix == ".py":
            found[path.stem].append(relative)
    return found


def test_no_two_modules_share_a_base_name() -> None:
    shared = {name: paths for name, paths in names().items() if len(paths) > 1 and name not in ALLOWED}
    assert not shared, f"modules sharing a base name (rename one, or add it to ALLOWED with a reason): {shared}"


def test_cli_modules_are_the_commands() -> None:
    """The cli/ exemption holds only for modules that run a command: every other cli/ module has a unique name."""
    assert all(module == f"multinet_jax.cli.{command}" for command, (module, _) in cli.COMMANDS.items())


def test_allowed_names_are_still_shared() -> None:
    """An entry of ALLOWED whose modules were renamed is stale, and goes."""
    found = names()
    assert all(len(found[name]) > 1 for name in ALLOWED), {name: found[name] for name in ALLOWED}


def imports_module(path: pathlib.Path, module: str) -> bool:
    """Whether `path` imports `module` itself or a name from it (`from multinet_jax.models import paligemma` too)."""
    package, name = module.rsplit(".", 1)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import) and any(alias.name == module for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module == module or
                                                 node.module == package and any(a.name == name for a in node.names)):
            return True
    return False


def test_paligemma_model_and_tokenizer_modules_are_never_imported_together() -> None:
    """The reason ALLOWED gives for `paligemma`, checked over the package, tests and benchmarks."""
    root = PACKAGE_DIR.parent
    both = [str(path.relative_to(root)) for folder in ("multinet_jax", "tests", "benchmarks")
            for path in sorted((root / folder).rglob("*.py"))
            if imports_module(path, "multinet_jax.models.paligemma")
            and imports_module(path, "multinet_jax.tokenizers.paligemma")]
    assert not both, both
