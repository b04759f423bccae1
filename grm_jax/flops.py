"""What a traced program computes: its equations (nested ones included) and its matmul FLOP count.

Used by ``benchmarks/forward.py`` and ``benchmarks/train_throughput.py`` (GFLOP per forward, cross-checked against
the official model's counts, docs/model.md#configurations) and by the tests that inspect which dtypes the matmuls
take.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import jax


def iter_eqns(jaxpr) -> Iterator:
    """Every equation of ``jaxpr`` and, depth first, of the jaxprs nested in its parameters (jit, custom_vjp,
    remat, scan ... bodies)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from iter_eqns(inner)


def matmul_flops(fn, *args) -> int:
    """2·MAC of every ``dot_general`` and ``conv_general_dilated`` in ``fn(*args)``'s jaxpr (the GFLOP convention
    of docs/model.md#configurations): dot 2·|out|·Π contracted dims; convolution 2·|out|·C_in·Π kernel spatial
    dims. ``args`` may be ``jax.ShapeDtypeStruct``s."""
    total = 0
    for eqn in iter_eqns(jax.make_jaxpr(fn)(*args).jaxpr):
        out = math.prod(eqn.outvars[0].aval.shape)
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * out * math.prod(lhs[d] for d in contract)
        elif eqn.primitive.name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            spec = eqn.params["dimension_numbers"].rhs_spec  # (out features, in features, spatial...)
            total += 2 * out * rhs[spec[1]] * math.prod(rhs[d] for d in spec[2:])
    return total


def predictor_shared_flops(model) -> int:
    """Matmul FLOPs per sample that the official forward spends and this port's does not: the division predictor's
    first layer multiplies the target half of [u_x, broadcast(t)] once per search token, the port once per sample
    (``relation.pair_dense``, docs/model.md#predictor): (L − 1) · 2 · (Ns − 1) · D · F₀ for the L − 1 division
    layers, Ns search tokens, width D and F₀ hidden units (``model`` a ``ModelConfig``; 1.65 GFLOP for ViT-B/256).
    The official forward's count is :func:`matmul_flops` of the port plus this."""
    return (model.depth - 1) * 2 * (model.num_search - 1) * model.embed_dim * model.divide_hidden[0]


def official_forward_flops(model, variables, template, search) -> int:
    """Matmul FLOPs of the official model's forward on these inputs: :func:`matmul_flops` of ``model.apply`` (a
    GRM module) plus :func:`predictor_shared_flops` of ``model.config`` for each sample of the batch. ``variables``
    and the images may be ``jax.ShapeDtypeStruct``s."""
    counted = matmul_flops(lambda v, z, x: model.apply(v, z, x), variables, template, search)
    return counted + template.shape[0] * predictor_shared_flops(model.config)
