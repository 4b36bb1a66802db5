"""Model FLOPs of one call, counted on its jaxpr: the matmul and convolution FLOPs (2 per multiply-add), as
MaxText's MFU counts them, with every loop's body counted as often as it runs.

XLA's `compiled.cost_analysis()` counts a loop body once whatever its trip count (checked: a 10-step
`fori_loop` of 256^3 matmuls reports the FLOPs of one), and these models loop over layers (`scan`), flow steps
and decode steps (`while`). Here a `scan` body counts `length` times; a `while` body counts `while_trips` times,
which the caller knows (the flow steps, the decode steps) and the jaxpr does not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
from jax.extend import core as jax_core

from multinet_jax.models import numerics


def _dot_flops(equation: Any) -> int:
    lhs, rhs = (variable.aval.shape for variable in equation.invars[:2])
    (lhs_contract, _), (lhs_batch, _) = equation.params["dimension_numbers"]
    contracted = math.prod(lhs[axis] for axis in lhs_contract)
    batch = math.prod(lhs[axis] for axis in lhs_batch)
    # 2 * batch * lhs_free * rhs_free * contracted, with lhs = batch * lhs_free * contracted.
    return 2 * math.prod(lhs) * math.prod(rhs) // (batch * contracted)


def _conv_flops(equation: Any) -> int:
    rhs = equation.invars[1].aval.shape
    out = equation.outvars[0].aval.shape
    out_features = rhs[equation.params["dimension_numbers"].rhs_spec[0]]
    return 2 * math.prod(out) * math.prod(rhs) // out_features


def _sub_jaxprs(value: Any) -> list[Any]:
    if isinstance(value, jax_core.ClosedJaxpr):
        return [value.jaxpr]
    if isinstance(value, jax_core.Jaxpr):
        return [value]
    return []


def jaxpr_flops(jaxpr: Any, while_trips: int) -> int:
    """FLOPs of a (closed) jaxpr, loops counted as described in the module docstring."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for equation in jaxpr.eqns:
        name = equation.primitive.name
        if name == "dot_general":
            total += _dot_flops(equation)
        elif name == "conv_general_dilated":
            total += _conv_flops(equation)
        elif name == "scan":
            total += equation.params["length"] * jaxpr_flops(equation.params["jaxpr"], while_trips)
        elif name == "while":
            total += while_trips * jaxpr_flops(equation.params["body_jaxpr"], while_trips)
        elif name == "cond":
            total += max(jaxpr_flops(branch, while_trips) for branch in equation.params["branches"])
        else:  # pjit, remat, custom_jvp/vjp calls, ...: whatever jaxprs they hold
            for value in equation.params.values():
                for inner in _sub_jaxprs(value):
                    total += jaxpr_flops(inner, while_trips)
    return total


def count_flops(fn: Callable[..., Any], *args: Any, while_trips: int = 1, **kwargs: Any) -> int:
    """Model FLOPs of `fn(*args, **kwargs)` (traced abstractly: nothing runs), one-row products counted as the model
    writes them (`numerics.products_as_written`), not with the zero row the CPU backend is given."""
    with numerics.products_as_written():
        return jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs), while_trips)
