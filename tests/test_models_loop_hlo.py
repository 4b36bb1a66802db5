"""What the CPU-compiled loops of the bf16 decoders and flow samplers do with weights and KV cache (issue 22): inside
every loop that holds a loop (decode steps and flow steps, with the layer scans in them), no float32 copy of a weight
or of the cache.

Each family's `benchmark_call` (the call the suite times) is compiled at batch 1 with the suite's tiny config and
random bf16 weights, and its optimized HLO is read. Before `numerics` computed one-row products on two rows, the
stacked MLP gating was multiplied half by half, and the cache went through the layer scan as uint16 bits, XLA's CPU
backend wrote per decode step a float32 copy of every weight matrix of every layer (Pi0-FAST and OpenVLA: 6 per
layer) and of the whole K and V caches; this test failed on that code with those 8 copies for both decoders.

Not checked, because XLA's CPU backend cannot do otherwise with stacked layers: each layer's slice of a stacked bf16
weight or cache is copied out (in bf16 or as bits) before use; on a GPU such a slice is an offset into the stack.
Loop-invariant conversions are hoisted out of the loops and not checked either (Pi0's action projections take
float32 inputs, as openpi's, so their kernels are converted once per call).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import pytest

from benchmarks import suite
from multinet_jax import sharding
from multinet_jax.models.interface import InferenceOptions

OPTIONS = InferenceOptions(num_flow_steps=3, max_decoding_steps=4)
FAMILIES = ("pi0_fast", "openvla", "pi0", "pi05", "smolvla")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\([^()]*\)|\S+) ([\w\-]+)\(([^)]*)\)")
_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")


# Opcodes that hand arrays on without computing them (loop state, tuples, control flow).
_PASS_THROUGH = {"parameter", "get-tuple-element", "tuple", "while", "conditional", "call", "bitcast"}


class Instruction(NamedTuple):
    opcode: str
    arrays: list[tuple[str, tuple[int, ...]]]  # (dtype, dims) of each array it outputs (several for a tuple)
    operands: list[tuple[str, tuple[int, ...]]]  # (dtype, dims) of each array operand


def _arrays(shape: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(dtype, tuple(int(d) for d in dims.split(",") if d)) for dtype, dims in _ARRAY.findall(shape)]


def parse(hlo: str) -> tuple[dict[str, list[Instruction]], dict[str, list[str]]]:
    """The instructions of each computation of `compiled.as_text()`, with their operands' shapes; and the
    computations each one calls as control flow."""
    computations: dict[str, list[Instruction]] = {}
    calls: dict[str, list[str]] = {}
    current = None
    for line in hlo.splitlines():
        if match := _COMPUTATION.match(line):
            current, shapes = match.group(1), {}
            computations[current], calls[current] = [], []
        elif line.startswith("}"):
            current = None
        elif current is not None and (match := _INSTRUCTION.match(line)):
            name, shape, opcode, operands = match.groups()
            shapes[name] = _arrays(shape)
            operand_arrays = [array for operand in re.findall(r"%([\w.\-]+)", operands) for array in shapes.get(operand, [])]
            computations[current].append(Instruction(opcode, shapes[name], operand_arrays))
            if opcode != "fusion":  # control flow: loop bodies and conditions, branches, calls
                calls[current] += re.findall(r"(?:body|condition|calls|to_apply)=%?([\w.\-]+)", line)
                for branches in re.findall(r"branch_computations=\{([^}]*)\}", line):
                    calls[current] += [branch.strip().lstrip("%") for branch in branches.split(",")]
    return computations, calls


def loop_instructions(hlo: str) -> list[Instruction]:
    """The instructions of the loops that hold loops (decode steps and flow steps, with the layer scans in them),
    and of whatever they call as control flow; the insides of fusions are not separate buffers, so not listed."""
    computations, calls = parse(hlo)

    def closure(roots: list[str]) -> set[str]:
        seen, pending = set(), list(roots)
        while pending:
            name = pending.pop()
            if name not in seen and name in computations:
                seen.add(name)
                pending += calls[name]
        return seen

    bodies = set(re.findall(r"body=%?([\w.\-]+)", hlo))
    outer = [body for body in bodies if any(i.opcode == "while" for name in closure([body]) for i in computations[name])]
    return [instruction for name in closure(outer) for instruction in computations[name]]


def float32_copies(instructions: list[Instruction], params, cache_dims: Callable[[tuple[int, ...]], bool]):
    """Instructions whose float32 output is a weight or KV cache, or one layer or half of one, converted.

    A weight: an operand with the dims of a parameter (a stack of layers, or the `[.., 2, width, mlp]` gating),
    output with the element count of the whole operand or of a trailing block of at least a matrix. A cache: an
    operand `cache_dims` accepts (the stacked `[depth, b, slots, kv_heads, head_dim]`), whole or one layer's slice
    in any layout (OpenVLA's attention converted each layer's K and V slice, transposed, before s4_decode)."""
    weights = {np.shape(leaf) for leaf in jax.tree.leaves(params)}
    found = []
    for instruction in instructions:
        if instruction.opcode in _PASS_THROUGH:
            continue
        for dtype, dims in instruction.arrays:
            if dtype != "f32":
                continue
            for operand_dtype, operand in instruction.operands:
                if operand_dtype not in ("bf16", "u16"):
                    continue
                blocks = {math.prod(operand[start:]) for start in range(max(len(operand) - 1, 1))}
                cache_blocks = {math.prod(operand), math.prod(operand[1:]), math.prod(operand[-4:])}
                if (operand in weights and math.prod(dims) in blocks) or (cache_dims(operand) and math.prod(dims) in cache_blocks):
                    found.append((instruction.opcode, dims, operand))
    return found


def kv_cache_dims(params) -> Callable[[tuple[int, ...]], bool]:
    """Whether dims are a stacked KV cache `[depth, b, slots, kv_heads, head_dim]` of the decoder whose stacked
    `kv_einsum` weights (`[depth, 2, kv_heads, width, head_dim]`, one per expert) are in `params`; also as SmolVLA's
    expert reads it, depth split into `[depth / period, period, ...]`."""
    layouts = {(shape[0], shape[2], shape[4]) for path, leaf in jax.tree_util.tree_leaves_with_path(params)
               if "kv_einsum" in jax.tree_util.keystr(path) and len(shape := np.shape(leaf)) == 5}
    assert layouts, "no stacked kv_einsum weights in the parameters"
    return lambda dims: len(dims) in (5, 6) and (math.prod(dims[:-4]), dims[-2], dims[-1]) in layouts


@functools.cache
def compiled_loops(family: str) -> tuple[Any, list[Instruction]]:
    """(the parameters, the loop instructions) of `family`'s `benchmark_call` at batch 1, tiny, random bf16 weights."""
    mesh = sharding.make_mesh("data:1,model:1", devices=jax.devices()[:1])
    model = suite.bench_model(family, True, "bfloat16", mesh)
    assert {leaf.dtype for leaf in jax.tree.leaves(model.params)} == {np.dtype("bfloat16")}
    call = model.benchmark_call(1, OPTIONS, 1)
    instructions = loop_instructions(call.function.lower(*call.args, **call.kwargs).compile().as_text())
    assert sum(i.opcode == "while" for i in instructions) >= 1, "no nested loops found: the parser no longer reads XLA's text"
    return model.params, instructions


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_loops_read_weights_and_cache_without_float32_copies(family):
    params, instructions = compiled_loops(family)
    copies = float32_copies(instructions, params, kv_cache_dims(params))
    assert not copies, f"float32 copies of weights or cache in {family}'s loops (opcode, dims, of dims): {copies}"
    # Nor a cache held in float32 through the loops (converted once, outside them, then read and converted back per
    # layer and step): SmolVLA's flow loop did so while its expert scanned the prefix cache as bf16.
    is_cache = kv_cache_dims(params)
    held = {dims for i in instructions for dtype, dims in i.arrays if dtype == "f32" and is_cache(dims)}
    assert not held, f"float32 KV cache carried through {family}'s loops: {held}"


@pytest.mark.parametrize("family", FAMILIES)
def test_kv_cache_is_updated_in_place(family):
    """A decode step writes its K and V into the stacked cache where it lies: the only cache-sized arrays its loops
    make are those two in-place updates (no copy, no conversion, no stack rebuilt by the layer scan); a flow step
    only reads the prefix cache. Before the cache was the layer scan's carry, a Pi0-FAST or OpenVLA step made 8:
    the scan's new stack (a broadcast and its copy, the per-layer writes into it for K and V) and the K and V
    conversions to and from the scan's form."""
    params, instructions = compiled_loops(family)
    is_cache = kv_cache_dims(params)
    made = [(i.opcode, dtype, dims) for i in instructions if i.opcode not in _PASS_THROUGH
            for dtype, dims in i.arrays if is_cache(dims)]
    assert len(made) <= 2 and not any(opcode == "copy" for opcode, *_ in made), made
