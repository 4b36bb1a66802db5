"""The evaluator knows no model family: what it needs is in the registry's `Family` and the `Model` interface.

The check reads the registry's names, so a family registered later (Magma, SmolVLA) is covered by the same test.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import io
import pathlib
import re
import tokenize

import jax
import numpy as np
import pytest

from multinet_jax import sharding
from multinet_jax.models import Model, registry
from multinet_jax.models.interface import InferenceOptions

REPO = pathlib.Path(__file__).resolve().parents[1]
# The evaluator's modules: the loop, runners, probing run and demo dispatch (eval/), every command (cli/) and the
# benchmark suite, whose `MODELS` table is where a family gets its line.
EVALUATOR_MODULES = sorted([*REPO.glob("multinet_jax/eval/*.py"), *REPO.glob("multinet_jax/cli/*.py"),
                            REPO / "benchmarks" / "suite.py"])
ALLOWED_TABLES = {"MODELS"}
# Tokens of code that can name something: identifiers and string literals (an f-string's text from Python 3.12 on).
CODE_TOKENS = {tokenize.NAME, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}


def family_pattern(names: tuple[str, ...]) -> re.Pattern:
    """A family name as a word of an identifier or text: `openvla_actions` and "pi0_tiny" name one, `Pi0FastModel`
    ("pi0" glued to letters) is not read as one."""
    alternatives = "|".join(sorted(map(re.escape, names), key=len, reverse=True))
    return re.compile(rf"(?<![a-z0-9])({alternatives})(?![a-z0-9])", re.IGNORECASE)


def _skipped_lines(tree: ast.Module) -> set[int]:
    """Lines of docstrings (prose, which may mention a model) and of the allowed tables' assignments."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            lines.update(range(body[0].lineno, body[0].end_lineno + 1))
        if isinstance(node, ast.Assign) and any(isinstance(target, ast.Name) and target.id in ALLOWED_TABLES
                                                for target in node.targets):
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


def family_mentions(source: str, names: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, token) of every identifier or string in `source`'s code that names a family (comments, docstrings and
    the allowed tables left out)."""
    pattern, skipped = family_pattern(names), _skipped_lines(ast.parse(source))
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in CODE_TOKENS and token.start[0] not in skipped \
                and pattern.search(token.string):
            found.append((token.start[0], token.string))
    return found


def test_no_evaluator_module_names_a_registered_family():
    names = registry.family_names()
    assert {"pi0", "pi05", "pi0_fast", "openvla", "paligemma"} <= set(names)
    assert len(EVALUATOR_MODULES) > 10 and REPO / "multinet_jax" / "eval" / "loop.py" in EVALUATOR_MODULES
    mentions = {str(path.relative_to(REPO)): found for path in EVALUATOR_MODULES
                if (found := family_mentions(path.read_text(), names))}
    assert mentions == {}


@pytest.mark.parametrize("code, found", [
    ('if model.family == "openvla":\n    pass\n', [(1, '"openvla"')]),
    ("from multinet_jax import openvla_actions\n", [(1, "openvla_actions")]),
    ('x = "--model=Pi0-FAST"\n', [(1, '"--model=Pi0-FAST"')]),
    ('"""Pi0 in a docstring."""\n# pi0 in a comment\ny = PaliGemmaTokenizer\nMODELS = {"pi0": 1}\n', []),
])
def test_the_check_finds_family_names_in_code_only(code, found):
    assert family_mentions(code, ("pi0", "pi0_fast", "openvla", "paligemma")) == found


def _hooks(record: object) -> list:
    return [value for field in dataclasses.fields(record) if callable(value := getattr(record, field.name))]


def test_every_registered_hook_names_a_function():
    hooks = [hook for checkpoint_format in registry.formats() for hook in _hooks(checkpoint_format)]
    hooks += [hook for name in registry.family_names() for hook in _hooks(registry.family(name))]
    assert len(hooks) >= 7 * len(registry.formats())
    for hook in hooks:
        if ":" in hook.__name__:
            module, function = hook.__name__.split(":")
            assert callable(getattr(importlib.import_module(module), function)), hook.__name__


@pytest.mark.parametrize("name", registry.family_names())
def test_every_family_builds_a_model_with_the_whole_interface(name):
    """A random model of the family's demo config implements every member the evaluator, probing and the suite use,
    and its benchmark call runs and makes what it says."""
    family = registry.family(name)
    mesh = sharding.make_mesh("data:1,model:1", devices=jax.devices()[:1])
    rng = np.random.default_rng(0)
    model = registry.random_model(name, family.demo_config, dtype="float32", mesh=mesh, params=lambda shapes: jax.tree.map(
        lambda leaf: (rng.standard_normal(leaf.shape) * 0.02).astype(leaf.dtype), shapes))
    assert isinstance(model, Model) and model.family == name
    if family.action_tokenizer is not None:  # attached at load (Pi0-FAST's FAST prompt): refused without it
        with pytest.raises(ValueError, match="x: .* has no action tokenizer"):
            model.action_prompts(None, normalize_state=False, source="x")
    else:
        assert model.action_prompts(None, normalize_state=False, source="x") is None or family.assets
    call = model.benchmark_call(2, InferenceOptions(num_flow_steps=2, max_decoding_steps=3), live_cameras=1)
    output = call()
    if call.counts_tokens:
        assert 1 <= int(output[1]) <= call.loop_trips + 1  # decode steps run (all, unless every row stopped at once)
    else:
        assert np.asarray(output).shape[:2] == (2, model.config.action_horizon)
