"""Generalized relation modeling (docs/model.md#division-module): which search tokens may talk to the template.

In every block but the first, a small MLP looks at each search token next to a summary of the template and
classifies it as *search-only* (class 0) or *interacting with the template* (class 1). The three token categories
(template T, search-only S, interacting A) define an attention mask: T sees T∪A, S sees S∪A, A sees everything.
The official masked softmax keeps a tiny ε/N weight on masked keys; it is reproduced here bit for bit in form.

Two attention implementations (``config.model.attention``):

* ``masked`` (default, the parity reference): :func:`masked_softmax` with the float mask of :func:`attention_mask`,
  in training and inference, as the official code. The mask is (B,1,N,N), shared by the heads; XLA fuses its
  construction into the logits→weights fusion, so no per-head N×N mask is materialised (checked in the HLO).
* ``fused`` (inference only): a hard boolean mask (:func:`visibility_mask`) through
  ``jax.nn.dot_product_attention`` (cuDNN flash attention on GPU for bfloat16/float16, XLA elsewhere); masked keys
  get exactly zero weight, so it differs from the reference by the ε leak and rounding (measured in
  ``tests/models/test_attention_paths.py``). **In training the reference path is used** whatever this setting: the
  division MLP learns only through the gradient of the float mask (docs/model.md#gumbel-softmax), which a boolean mask
  cannot carry, and a straight-through term would need the N×N weights the fused kernel exists to avoid.

With ``dtype=bfloat16`` the matmuls take bfloat16 operands and accumulate and return float32 (on CPUs with
AVX512-BF16 that is also the fast path); logits, softmax, LayerNorm and the loss stay float32.

Pure functions plus the linen modules that own the weights: :class:`Attention`, named as the official
``blocks.{i}.attn`` (``qkv``, ``proj`` and ``divide_predict_{0,2,4}``), and :class:`PairDense`, the predictor's
first layer with ``nn.Dense``'s parameters.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from grm_jax.config import ATTENTION_IMPLS, TGT_TYPES
from grm_jax.models.layers import accumulate_kwargs, dense_init, gelu, layer_key
from grm_jax.models.model_config import ModelConfig

EPS = 1e-6  # the masked softmax's ε (docs/model.md#masked-softmax)
# Policy columns (docs/model.md#attention-mask).
TEMPLATE, SEARCH_ONLY, INTERACT = 0, 1, 2

Array = Any


def template_box_mask(box_xywh: Array, grid: int) -> Array:
    """Template box mask m (B, grid²) for the roi* target representations (docs/model.md#template-box-mask).

    b = box · grid; rows max(int(y1),0) .. min(int(y1+h+1),grid)−1 and columns likewise are 1; int truncates
    toward zero; flattened row-major.
    """
    b = jnp.asarray(box_xywh, jnp.float32) * grid
    x1, y1, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    r0 = jnp.maximum(jnp.trunc(y1), 0)[..., None]
    r1 = jnp.minimum(jnp.trunc(y1 + h + 1), grid)[..., None]
    c0 = jnp.maximum(jnp.trunc(x1), 0)[..., None]
    c1 = jnp.minimum(jnp.trunc(x1 + w + 1), grid)[..., None]
    idx = jnp.arange(grid, dtype=jnp.float32)
    rows = (idx >= r0) & (idx < r1)
    cols = (idx >= c0) & (idx < c1)
    mask = rows[..., :, None] & cols[..., None, :]
    return mask.reshape(mask.shape[:-2] + (grid * grid,)).astype(jnp.float32)


def target_representation(u_z: Array, tgt_type: str, template_mask: Array | None = None) -> Array:
    """Summary t (B,1,D) of the template tokens u_z (B,Nz,D) (docs/model.md#target-representation).

    allmax: max over tokens; allavg: mean; roimax: max over u_z·m (masked-out tokens become 0 and still compete);
    roiavg: mean over all Nz entries of u_z·m (divides by Nz, not by the mask count).
    """
    if tgt_type == "allmax":
        return jnp.max(u_z, axis=1, keepdims=True)
    if tgt_type == "allavg":
        return jnp.mean(u_z, axis=1, keepdims=True)
    if tgt_type in ("roimax", "roiavg"):
        if template_mask is None:
            raise ValueError(f"tgt_type {tgt_type!r} needs template_mask (B, {u_z.shape[1]})")
        masked = u_z * template_mask[..., None].astype(u_z.dtype)
        if tgt_type == "roimax":
            return jnp.max(masked, axis=1, keepdims=True)
        return jnp.mean(masked, axis=1, keepdims=True)
    raise ValueError(f"tgt_type = {tgt_type!r} is not one of {list(TGT_TYPES)}")


def gumbel_hard(logp: Array, noise: Array, tau: float = 1.0, scale: float = 1.0) -> Array:
    """Hard Gumbel-softmax with straight-through gradient (docs/model.md#gumbel-softmax; official τ = 1, s = 1).

    y_soft = softmax((ℓ + s·g)/τ); y_hard = one_hot(argmax y_soft); d = y_hard − stop_grad(y_soft) + y_soft.
    Forward values are 0/1 up to rounding and do not depend on τ (argmax of ℓ + s·g); the gradient is that of
    y_soft, which τ > 1 keeps from vanishing while |ℓ1 − ℓ0| is below a few τ. The noise scale s (a training option,
    ``config.train.gumbel_scale``) does move the decisions: s = 0 makes them the tracker's, argmax ℓ.
    """
    if scale != 1.0:  # s = 1 leaves the official program as it is
        noise = scale * noise
    y_soft = jax.nn.softmax((logp + noise) / tau, axis=-1)
    y_hard = jax.nn.one_hot(jnp.argmax(y_soft, axis=-1), logp.shape[-1], dtype=y_soft.dtype)
    return y_hard - jax.lax.stop_gradient(y_soft) + y_soft


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def clip_gradient(x: Array, bound: float) -> Array:
    """The identity in the forward pass; in the backward pass the cotangent is clipped elementwise to [−c, c]
    (``c = bound``, a Python number): ∂L/∂x ← clip(∂L/∂x, −c, c)."""
    return x


def _clip_gradient_fwd(x, bound):
    return x, None


def _clip_gradient_bwd(bound, _, g):
    return (jnp.clip(g, -bound, bound),)


clip_gradient.defvjp(_clip_gradient_fwd, _clip_gradient_bwd)


def select_tokens(logp: Array, threshold: Array) -> Array:
    """Inference-time division (docs/model.md#inference-threshold): one-hot (B,Ns,2), class 1 = interacts with the
    template.

    threshold == 0: argmax (class 1 iff ℓ1 > ℓ0). threshold > 0: class 1 iff p0 = exp(ℓ0) < threshold.
    ``threshold`` may be a traced array: one compiled program serves every value.
    """
    threshold = jnp.asarray(threshold, jnp.float32)
    by_argmax = logp[..., 1] > logp[..., 0]
    by_threshold = jnp.exp(logp[..., 0]) < threshold
    interact = jnp.where(threshold > 0, by_threshold, by_argmax)
    return jax.nn.one_hot(interact.astype(jnp.int32), 2, dtype=logp.dtype)


def token_policy(decision: Array, num_template: int) -> Array:
    """Policy P (B,N,3): template rows [1,0,0], search rows [0, d0, d1] (docs/model.md#attention-mask)."""
    batch = decision.shape[0]
    template = jnp.zeros((batch, num_template, 3), decision.dtype).at[..., TEMPLATE].set(1)
    search = jnp.concatenate([jnp.zeros(decision.shape[:-1] + (1,), decision.dtype), decision], axis=-1)
    return jnp.concatenate([template, search], axis=1)


def attention_mask(policy: Array) -> Array:
    """Permission matrix M (B,1,N,N) from the policy, shared by all heads (docs/model.md#attention-mask).

    M_ij = P0_i·P0_j + P1_i·P1_j + (P0_i·P2_j + P1_i·P2_j + P2_i·P2_j + P2_i·P0_j + P2_i·P1_j), then the diagonal
    is forced: M ← M + (1 − M)·I. Differentiable in P (the only path of gradient into the division MLP).
    """
    p0, p1, p2 = (policy[:, None, :, c] for c in range(3))

    def outer(a, b):
        return a[..., :, None] * b[..., None, :]

    group1 = outer(p0, p0)
    group2 = outer(p1, p1)
    group3 = outer(p0, p2) + outer(p1, p2) + outer(p2, p2) + outer(p2, p0) + outer(p2, p1)
    mask = group1 + group2 + group3
    eye = jnp.eye(policy.shape[1], dtype=mask.dtype)
    return mask + (1.0 - mask) * eye


def masked_softmax(logits: Array, mask: Array, eps: float = EPS) -> Array:
    """The official masked softmax (``Attention.softmax_with_policy``, docs/model.md#masked-softmax), over the last
    axis.

    m_i = max_j a_ij (masked keys included); e_ij = exp(a_ij − m_i)·M_ij in float32;
    w_ij = (e_ij + ε/N) / (Σ_j e_ij + ε), N = number of keys.
    """
    dtype = logits.dtype
    n = logits.shape[-1]
    e = jnp.exp((logits - jnp.max(logits, axis=-1, keepdims=True)).astype(jnp.float32)) * mask.astype(jnp.float32)
    w = (e + eps / n) / (jnp.sum(e, axis=-1, keepdims=True) + eps)
    return w.astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def policy_softmax(logits: Array, decision: Array, num_template: int) -> Array:
    """:func:`masked_softmax` with the mask of :func:`attention_mask` built from the decisions (B,Ns,2).

    The forward pass is exactly that composition. The backward pass is written out (:func:`_policy_softmax_bwd`):
    it keeps only the logits and the decisions, as a rematerialised softmax would, but recomputes the weights once
    and forms both cotangents in a few fused passes instead of differentiating the mask's outer products and the
    max one by one (the same values to float32 rounding, tests/models/test_relation.py).
    """
    return masked_softmax(logits, attention_mask(token_policy(decision, num_template)))


def _policy_softmax_fwd(logits, decision, num_template):
    return policy_softmax(logits, decision, num_template), (logits, decision)


def _policy_softmax_bwd(num_template, residuals, g):
    """Cotangents of w = (e + ε/N)/(S + ε), e_ij = x_ij·M_ij, x_ij = exp(a_ij − m_i), S_i = Σ_j e_ij, m_i = max_j a_ij.

    Row sums first, in one pass: S_i, q_i = Σ_j g_ij·e_ij, Γ_i = Σ_j g_ij and the ties of the max n_i. Then
    r_i = Σ_j g_ij·w_ij = (q_i + ε/N·Γ_i)/(S_i + ε) and δ_ij = ∂L/∂e_ij = (g_ij − r_i)/(S_i + ε), and in a second pass

    ∂L/∂a_ij = δ_ij·e_ij − [a_ij = m_i]/n_i · Σ_k δ_ik·e_ik, with Σ_k δ_ik·e_ik = (q_i − r_i·S_i)/(S_i + ε)
    (the max's share, split over ties as ``jnp.max``'s gradient is);
    ∂L/∂M_ij = Σ_heads δ_ij·x_ij off the diagonal, 0 on it (the diagonal is forced to 1);
    ∂L/∂P = (G + Gᵀ)·P·C with G = ∂L/∂M, since M = P·C·Pᵀ before the diagonal is forced, with the symmetric
    C = [[1,0,1],[0,1,1],[1,1,1]] (rows and columns T, S, A: group1 T·T, group2 S·S, group3 every pair with an A);
    its search rows in columns S and A are ∂L/∂decision, and columns S and A of P·C are P_S + P_A and
    P_T + P_S + P_A.

    The sum over heads is written as adds of per-head slices: XLA's CPU backend reduces the head axis of a
    (B,H,N,N) array some 60× slower (GRM-B/256 shapes: 11 ms against 0.17 ms).
    """
    logits, decision = residuals
    return _softmax_cotangents(logits, decision, num_template, g)[:2]


def _softmax_cotangents(logits, decision, num_template, g):
    """(∂L/∂logits, ∂L/∂decision, w) of :func:`policy_softmax` for the weights' cotangent ``g`` (formulas in
    :func:`_policy_softmax_bwd`), the mask, exp and weights recomputed from the logits and decisions; w are those
    float32 weights (:func:`_policy_attention_bwd` needs them for ∂L/∂V)."""
    n, heads = logits.shape[-1], logits.shape[1]
    policy = token_policy(decision, num_template).astype(jnp.float32)
    mask = attention_mask(policy)
    a = logits.astype(jnp.float32)
    m = jnp.max(a, axis=-1, keepdims=True)
    x = jnp.exp(a - m)
    e = x * mask
    s = jnp.sum(e, axis=-1, keepdims=True)
    denom = s + EPS
    g = g.astype(jnp.float32)
    is_max = (a == m).astype(jnp.float32)
    q = jnp.sum(g * e, axis=-1, keepdims=True)
    r = (q + EPS / n * jnp.sum(g, axis=-1, keepdims=True)) / denom
    max_share = (q - r * s) / denom / jnp.sum(is_max, axis=-1, keepdims=True)
    delta = (g - r) / denom
    d_logits = delta * e - is_max * max_share
    dx = delta * x
    d_mask = functools.reduce(jnp.add, [dx[:, h] for h in range(heads)]) * (1.0 - jnp.eye(n, dtype=jnp.float32))
    d_search = (d_mask + jnp.swapaxes(d_mask, 1, 2))[:, num_template:]  # (B,Ns,N): the search rows of G + Gᵀ
    column_s = policy[..., SEARCH_ONLY] + policy[..., INTERACT]
    column_a = policy[..., TEMPLATE] + column_s
    d_decision = jnp.stack([jnp.sum(d_search * column_s[:, None, :], axis=-1),
                            jnp.sum(d_search * column_a[:, None, :], axis=-1)], axis=-1)
    return d_logits.astype(logits.dtype), d_decision.astype(decision.dtype), (e + EPS / n) / denom


policy_softmax.defvjp(_policy_softmax_fwd, _policy_softmax_bwd)


def attention_logits(q: Array, k: Array, scale: float, acc: dict) -> Array:
    """The attention logits (q·kᵀ)·scale (B,H,N,N), as the official ``Attention.forward`` forms them; computed as
    (q·scale)·kᵀ where scale is a power of two.

    Multiplying by a power of two only moves the exponent, so each product q_d·scale·k_d equals (q_d·k_d)·scale and
    so does their sum: the same values bit for bit (short of underflow to subnormals), and the same gradients. The
    product then writes the logits directly, with no pass over the (B,H,N,N) array for the scale in either pass
    (GRM-B/256 train step: XLA's temp 60 MB less, benchmarks/README.md). ViT-B and ViT-L heads have 64 channels,
    scale 1/8; other scales keep the official order.
    """
    if math.log2(scale).is_integer():
        return jnp.einsum("bhqd,bhkd->bhqk", q * jnp.asarray(scale, q.dtype), k, **acc)
    return jnp.einsum("bhqd,bhkd->bhqk", q, k, **acc) * scale


def _accumulate(dtype) -> dict:
    """float32 accumulation for 16-bit operands; nothing for float32 (the reference program)."""
    return {} if jnp.dtype(dtype) == jnp.float32 else dict(preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def policy_attention(logits: Array, decision: Array, v: Array, num_template: int) -> Array:
    """The attention output W·V (B,H,N,d) of the division layers, W = :func:`policy_softmax` (logits, decisions).

    The forward pass is exactly that composition. The backward pass (:func:`_policy_attention_bwd`) keeps the
    logits, the decisions and V, and recomputes W from the logits: the composition's own backward keeps W (B,H,N,N)
    for ∂L/∂V = Wᵀ·G besides the logits the softmax keeps.
    """
    weights = policy_softmax(logits, decision, num_template)
    return jnp.einsum("bhqk,bhkd->bhqd", weights.astype(v.dtype), v, **_accumulate(v.dtype))


def _policy_attention_fwd(logits, decision, v, num_template):
    return policy_attention(logits, decision, v, num_template), (logits, decision, v)


def _policy_attention_bwd(num_template, residuals, g):
    """∂L/∂V = Wᵀ·G and ∂L/∂W = G·Vᵀ (the matmuls autodiff forms), with W recomputed; then the softmax's cotangents
    (:func:`_softmax_cotangents`). The optimization barrier ties the recomputation to G, as in
    ``layers._gelu_bwd``: otherwise XLA's CPU scheduler recomputes every layer's weights early and keeps them."""
    logits, decision, v, g = jax.lax.optimization_barrier((*residuals, g))
    acc = _accumulate(v.dtype)
    g = g.astype(v.dtype)
    d_logits, d_decision, w = _softmax_cotangents(logits, decision, num_template,
                                                  jnp.einsum("bhqd,bhkd->bhqk", g, v, **acc))
    return d_logits, d_decision, jnp.einsum("bhqk,bhqd->bhkd", w.astype(v.dtype), g, **acc).astype(v.dtype)


policy_attention.defvjp(_policy_attention_fwd, _policy_attention_bwd)


@jax.custom_vjp
def split_heads(qkv: Array) -> tuple[Array, Array, Array]:
    """q, k, v (B,H,N,d) from the qkv projection's output shaped (B,N,3,H,d): its axes permuted to (3,B,H,N,d), then
    split along the first.

    The backward pass (:func:`_split_heads_bwd`) stacks the three cotangents into one (B,N,3,H,d) array. Autodiff's
    transpose of the three slices pads each cotangent to the whole (3,B,H,N,d) array and adds the three: 3× the
    writes and two adds of zeros for the same values (x + 0 = x); in the per-op profile of a GRM-B/256 batch-2 train
    step on a 2-core CPU 130 ms against 22 ms (benchmarks/README.md).
    """
    q, k, v = qkv.transpose(2, 0, 3, 1, 4)
    return q, k, v


def _split_heads_fwd(qkv):
    return split_heads(qkv), None


def _split_heads_bwd(_, cotangents):
    """∂L/∂qkv = stack(∂L/∂q, ∂L/∂k, ∂L/∂v) with the axes put back: (3,B,H,N,d) → (B,N,3,H,d)."""
    return (jnp.stack(cotangents).transpose(1, 3, 0, 2, 4),)


split_heads.defvjp(_split_heads_fwd, _split_heads_bwd)


def visibility_mask(decision: Array, num_template: int) -> Array:
    """Hard permission matrix (B,1,N,N) bool from one-hot decisions (B,Ns,2): the 0/1 values of
    :func:`attention_mask` for an exact one-hot policy, without its float arithmetic.

    Token categories c: template T, search-only S (class 0), interacting A (class 1); key j is visible to query i
    iff c_i = c_j or c_i = A or c_j = A (T sees T∪A, S sees S∪A, A sees everything; the diagonal is visible since
    c_i = c_i). Carries no gradient: inference only.
    """
    batch = decision.shape[0]
    search = jnp.where(decision[..., 1] > 0.5, INTERACT, SEARCH_ONLY).astype(jnp.int8)
    category = jnp.concatenate([jnp.full((batch, num_template), TEMPLATE, jnp.int8), search], axis=1)
    ci, cj = category[:, None, :, None], category[:, None, None, :]
    return (ci == cj) | (ci == INTERACT) | (cj == INTERACT)


def fused_implementation(dtype) -> str | None:
    """``implementation`` for ``jax.nn.dot_product_attention``: cuDNN flash attention on a GPU for 16-bit
    operands (cuDNN has no float32 kernel), else XLA (``None``; in JAX 0.10 ``None`` never picks cuDNN itself)."""
    if jax.default_backend() == "gpu" and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return "cudnn"
    return None


def fused_attention(q: Array, k: Array, v: Array, visible: Array | None = None) -> Array:
    """softmax(q·kᵀ/√d, keys with ``visible`` False excluded)·v over (B,N,H,d) operands, one fused call.

    Masked keys get exactly zero weight (no ε leak); a row always sees its own key, so no row is empty.
    Logits and softmax are float32 whatever the operand dtype; returns ``v.dtype``.
    """
    implementation = fused_implementation(q.dtype)
    if implementation == "cudnn":
        try:
            return jax.nn.dot_product_attention(q, k, v, mask=visible, implementation="cudnn")
        except (ValueError, NotImplementedError, RuntimeError):  # shape/version checks raise while tracing
            pass
    return jax.nn.dot_product_attention(q, k, v, mask=visible, implementation="xla")


def pair_dense(u: Array, t: Array, kernel: Array, bias: Array, **dot_kwargs) -> Array:
    """Linear([u, broadcast(t)]) (B,N,F) for u (B,N,D) and one row t (B,1,D) per sample, kernel (2D,F) and bias
    (F,): u·W_u + (t·W_t + b), W_u = kernel[:D] and W_t = kernel[D:].

    The same map as the concatenation's matmul: the target half is computed once per sample instead of once per
    token, and the (B,N,2D) concatenation is never formed (docs/model.md#predictor). The values differ from the
    one matmul over 2D by float32 rounding, the sum over 2D being split in two.
    """
    dim = u.shape[-1]
    if t.shape[-1] != dim or kernel.shape[0] != 2 * dim:
        raise ValueError(f"pair_dense: u {u.shape}, t {t.shape} and kernel {kernel.shape} do not match "
                         f"(kernel rows = 2 x the token width)")
    dot = functools.partial(jnp.einsum, **dot_kwargs)
    return dot("bnd,df->bnf", u, kernel[:dim]) + (dot("bnd,df->bnf", t, kernel[dim:]) + bias)


class PairDense(nn.Module):
    """``nn.Dense`` over [u, broadcast(t)] (:func:`pair_dense`), with ``nn.Dense``'s parameters (``kernel``
    (2D,F), ``bias`` (F,)) and dtype handling: the division predictor's first layer."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, u: Array, t: Array) -> Array:
        kernel = self.param("kernel", dense_init(), (2 * u.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        u, t, kernel, bias = (a.astype(self.dtype) for a in (u, t, kernel, bias))
        return pair_dense(u, t, kernel, bias, **_accumulate(self.dtype))


class Attention(nn.Module):
    """Multi-head self-attention of block ``index``, with the division module when ``divide`` (blocks 1..L−1).

    Returns ``(out, aux)``; ``aux`` is None for a plain block, else a dict with ``logp`` (B,Ns,2) and
    ``decision`` (B,Ns,2), the one-hot choice (straight-through in training). ``config.attention``: ``masked`` (the
    reference) or ``fused`` (inference only; training always takes the reference path, see the module docstring).
    In training the Gumbel noise is drawn from each sample's key, stream ``index``
    (grm_jax/models/layers.py), unless ``gumbel_noise`` (B,Ns,2) is given (the parity tests' recorded noise).
    """

    config: ModelConfig
    divide: bool = False
    index: int = 0

    def _dense(self, features, name, use_bias=True):
        dtype = self.config.dtype
        return nn.Dense(features, use_bias=use_bias, kernel_init=dense_init(), dtype=dtype, name=name,
                        **accumulate_kwargs(dtype))

    def divide_predict(self, u: Array, template_mask: Array | None) -> Array:
        """ℓ (B,Ns,2) = LogSoftmax(Linear(GELU(Linear(GELU(Linear([u_x, t])))))) per search token
        (docs/model.md#predictor)."""
        nz = self.config.num_template
        u_z, u_x = u[:, :nz], u[:, nz:]
        t = target_representation(u_z, self.config.tgt_type, template_mask)
        h = gelu(PairDense(self.config.divide_hidden[0], self.config.dtype, name="divide_predict_0")(u_x, t))
        h = gelu(self._dense(self.config.divide_hidden[1], "divide_predict_2")(h))
        h = self._dense(2, "divide_predict_4")(h)
        return jax.nn.log_softmax(h.astype(jnp.float32), axis=-1)

    def gumbel(self, keys: Array | None, shape) -> Array:
        """Gumbel noise (B,Ns,2), sample g's from fold_in(keys[g], index)."""
        if keys is None:
            raise ValueError("a training call needs per-sample keys: model.apply(..., train=True, "
                             "sample_keys=grm_jax.models.layers.sample_keys(seed_key, step, sample_ids)) "
                             "or recorded gumbel_noise")
        return jax.vmap(lambda k: jax.random.gumbel(k, shape[1:], jnp.float32))(layer_key(keys, self.index))

    @nn.compact
    def __call__(self, x, template_mask=None, *, train=False, threshold=0.0, gumbel_noise=None, keys=None):
        cfg = self.config
        if cfg.attention not in ATTENTION_IMPLS:
            raise ValueError(f"attention = {cfg.attention!r} is not one of {list(ATTENTION_IMPLS)}")
        batch, n, dim = x.shape
        head_dim = dim // cfg.num_heads
        qkv = self._dense(3 * dim, "qkv", use_bias=cfg.qkv_bias)(x)
        # Output rows are q ‖ k ‖ v, each split into heads of head_dim consecutive rows
        # (docs/model.md#state-dict-layout).
        qkv = qkv.reshape(batch, n, 3, cfg.num_heads, head_dim).astype(cfg.dtype)

        aux = decision = None
        if self.divide:
            logp = self.divide_predict(x, template_mask)
            if train:
                noise = self.gumbel(keys, logp.shape) if gumbel_noise is None else gumbel_noise
                decision = gumbel_hard(logp, noise, cfg.gumbel_tau, cfg.gumbel_scale)
                if cfg.division_grad_clip:  # a training option (config.train.division_grad_clip); 0 = official
                    decision = clip_gradient(decision, cfg.division_grad_clip)
            else:
                decision = select_tokens(logp, threshold)
            aux = dict(logp=logp, decision=decision)

        if cfg.attention == "fused" and not train:
            visible = visibility_mask(decision, cfg.num_template) if self.divide else None
            out = fused_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], visible)
        else:
            # float32 logits and weights whatever the dtype (a no-op for float32: the reference program).
            acc = _accumulate(cfg.dtype)
            q, k, v = split_heads(qkv)
            logits = attention_logits(q, k, head_dim ** -0.5, acc)
            # (B,H,N,d) then the head transpose: XLA's CPU backend sends this form to its YNNPACK matmul, faster
            # than the "bqhd" output layout's generic dot on the AVX-512 CPUs (same values, bit for bit); on an AVX2
            # CPU both run below XLA's Eigen dot (benchmarks/README.md, 2026-12-05).
            if self.divide:
                # Keeps only the logits, decisions and V for the backward pass, which recomputes the mask, exp and
                # weights (B,H,N,N) (benchmarks/README.md: GRM-B/256 train step, XLA's memory analysis; same values).
                out = policy_attention(logits, decision, v, cfg.num_template)
            else:
                weights = jax.nn.softmax(logits, axis=-1)
                out = jnp.einsum("bhqk,bhkd->bhqd", weights.astype(v.dtype), v, **acc)
            out = out.transpose(0, 2, 1, 3)
        return self._dense(dim, "proj")(out.reshape(batch, n, dim)), aux
