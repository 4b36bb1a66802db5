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

Also (few kernels per step): Pi0-FAST's and OpenVLA's decode steps compute the rotary angles once, and at batch 8
copy no array outside the layer scan.
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
    fused: str | None  # the computation a fusion runs


def _arrays(shape: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(dtype, tuple(int(d) for d in dims.split(",") if d)) for dtype, dims in _ARRAY.findall(shape)]


def parse(hlo: str, fusions: bool = False) -> tuple[dict[str, list[Instruction]], dict[str, list[str]]]:
    """The instructions of each computation of `compiled.as_text()`, with their operands' shapes; and the
    computations each one calls as control flow (and, with `fusions`, the fused computations it runs)."""
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
            fused = re.search(r"calls=%?([\w.\-]+)", line) if opcode == "fusion" else None
            computations[current].append(Instruction(opcode, shapes[name], operand_arrays, fused and fused.group(1)))
            if opcode != "fusion" or fusions:  # control flow: loop bodies and conditions, branches, calls
                calls[current] += re.findall(r"(?:body|condition|calls|to_apply)=%?([\w.\-]+)", line)
                for branches in re.findall(r"branch_computations=\{([^}]*)\}", line):
                    calls[current] += [branch.strip().lstrip("%") for branch in branches.split(",")]
    return computations, calls


def _closure(roots: list[str], computations: dict[str, list[Instruction]], calls: dict[str, list[str]]) -> set[str]:
    """`roots` and every computation they call, transitively."""
    seen, pending = set(), list(roots)
    while pending:
        name = pending.pop()
        if name not in seen and name in computations:
            seen.add(name)
            pending += calls[name]
    return seen


def _outer_loops(hlo: str, computations: dict[str, list[Instruction]], calls: dict[str, list[str]]) -> list[str]:
    """The bodies of the loops that hold loops: decode steps and flow steps, with the layer scans in them."""
    bodies = set(re.findall(r"body=%?([\w.\-]+)", hlo))
    return [body for body in bodies if any(i.opcode == "while" for name in _closure([body], computations, calls)
                                           for i in computations[name])]


def loop_instructions(hlo: str, fusions: bool = False) -> list[Instruction]:
    """The instructions of the loops that hold loops, and of whatever they call as control flow; the insides of
    fusions are not separate buffers, so listed only with `fusions` (to count the operations a step computes)."""
    computations, calls = parse(hlo, fusions)
    names = _closure(_outer_loops(hlo, computations, calls), computations, calls)
    return [instruction for name in names for instruction in computations[name]]


def step_array_copies(hlo: str) -> list[Instruction]:
    """The copies and transposes of arrays (scalars aside) that the outer loops' own bodies make, outside the layer
    scans: `copy`/`transpose` instructions and fusions that only move data."""
    computations, calls = parse(hlo)
    moves = lambda i: i.opcode in ("copy", "transpose") or (i.opcode == "fusion" and any(
        j.opcode in ("copy", "transpose") for j in computations[i.fused]) and all(
        j.opcode in ("parameter", "copy", "transpose", "bitcast") for j in computations[i.fused]))
    return [i for body in _outer_loops(hlo, computations, calls) for i in computations[body]
            if moves(i) and any(dims for _, dims in i.arrays)]


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
def compiled_hlo(family: str, batch: int = 1) -> tuple[Any, str]:
    """(the parameters, the optimized HLO text) of `family`'s `benchmark_call` at `batch`, tiny, random bf16 weights."""
    mesh = sharding.make_mesh("data:1,model:1", devices=jax.devices()[:1])
    model = suite.bench_model(family, True, "bfloat16", mesh)
    assert {leaf.dtype for leaf in jax.tree.leaves(model.params)} == {np.dtype("bfloat16")}
    call = model.benchmark_call(batch, OPTIONS, 1)
    return model.params, call.function.lower(*call.args, **call.kwargs).compile().as_text()


def compiled_loops(family: str) -> tuple[Any, list[Instruction]]:
    """(the parameters, the loop instructions) of `compiled_hlo(family)`."""
    params, hlo = compiled_hlo(family)
    instructions = loop_instructions(hlo)
    assert sum(i.opcode == "while" for i in instructions) >= 1, "no nested loops found: the parser no longer reads XLA's text"
    return params, instructions


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


# Kernels per decode step (CPU, tiny configs of 3 layers: the decode body + 3 x the layer body, bf16), before and
# after the rotary angles were computed once and the key mask in one op (issue 22, few kernels at batch 1), for
# Pi0-FAST and OpenVLA alike: 146 -> 142 at batch 1, 142 -> 134 at batch 8; copies and transposes of arrays among
# them 15 -> 15 and 17 -> 12. What stays is inherent on CPU: docs/decoding.md ("Kernels per decode step").
@pytest.mark.parametrize("family", ("pi0_fast", "openvla"))
def test_decode_step_computes_rotary_angles_once(family):
    """A decode step computes the rotary sin and cos once, for the queries and the keys of every layer. Each
    `apply_rope` computed its own: XLA hoisted both out of the layer scan but did not merge them (3 more kernels per
    step). This test failed before with 2 sines and 2 cosines per step."""
    _, hlo = compiled_hlo(family)
    opcodes = [i.opcode for i in loop_instructions(hlo, fusions=True)]
    assert (opcodes.count("sine"), opcodes.count("cosine")) == (1, 1), f"{family}: sines and cosines per decode step"


@pytest.mark.parametrize("family", ("pi0_fast", "openvla"))
def test_decode_step_copies_no_array_outside_the_layers(family):
    """At batch 8, a decode step's body outside the layer scan copies no array (the copies left are each layer's
    slices of the stacked weights and cache, inherent on CPU). It copied 5 per step before (this test failed so):
    the rotary sin and cos of the queries and of the keys, laid out `[b, 1, 1, half]` apart from their use, and the
    key mask after it was concatenated and given its query axis."""
    _, hlo = compiled_hlo(family, 8)
    copies = [(i.opcode, i.arrays) for i in step_array_copies(hlo)]
    assert not copies, f"{family}: array copies per decode step outside the layer scan: {copies}"
