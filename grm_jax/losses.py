"""Training losses of GRM (docs/training.md#losses): GIoU + L1 on the decoded box, CenterNet focal loss on the score
map.

All functions are pure ``jax.numpy``, batched, and jit-able. Arithmetic is float32 and written in the same order
as the official PyTorch code (OSTrack's ``heapmap_utils``/``focal_loss``/``box_ops`` and the GRM actor), so that the
results agree with the reference numbers to float32 rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from grm_jax.boxes import cxcywh_to_xyxy, generalized_box_iou, xywh_to_xyxy

FLOAT64_EPS = 2.220446049250313e-16  # np.finfo(np.float64).eps: the official kernel is built in float64


def gaussian_radius(w, h, min_overlap=0.7):
    """CornerNet's "buggy" Gaussian radius as used by the official heat-map target (``lib/utils/heapmap_utils.py``
    ``CenterNetHeatMap.get_gaussian_radius``; docs/training.md#heat-map-target).

    With m = min_overlap:
      a1 = 1,  b1 = h + w,        c1 = w·h·(1 − m)/(1 + m)
      a2 = 4,  b2 = 2(h + w),     c2 = (1 − m)·w·h
      a3 = 4m, b3 = −2m(h + w),   c3 = (m − 1)·w·h
      r_k = (b_k + sqrt(b_k² − 4·a_k·c_k)) / 2      (divided by 2, not 2·a_k: the upstream bug)
    returns min(r1, r2, r3) in float32 (not clamped, not truncated; the heat map uses int(max(0, r))).
    ``w``, ``h`` are in feature cells and broadcast against each other.
    """
    width = jnp.asarray(w, jnp.float32)
    height = jnp.asarray(h, jnp.float32)
    m = min_overlap
    # Python-scalar factors are folded first (as the official code's scalar expressions are), then applied in
    # float32 in the official order.
    b1 = height + width
    c1 = width * height * (1 - m) / (1 + m)
    r1 = (b1 + jnp.sqrt(b1**2 - (4 * 1) * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - m) * width * height
    r2 = (b2 + jnp.sqrt(b2**2 - (4 * 4) * c2)) / 2
    b3 = (-2 * m) * (height + width)
    c3 = (m - 1) * width * height
    r3 = (b3 + jnp.sqrt(b3**2 - (4 * (4 * m)) * c3)) / 2
    return jnp.minimum(r1, jnp.minimum(r2, r3))


def gaussian_heatmap(boxes_xywh, size):
    """CenterNet Gaussian target maps (official ``generate_heatmap``; docs/training.md#heat-map-target) for
    normalised x1,y1,w,h boxes ``(B, 4)`` → ``(B, S, S)``.

    ``size`` (S, = search size // stride) must be a static Python int under ``jax.jit``. Per box g:
      b = g·S;  (w, h) = b[2:];  (cx, cy) = round_half_even(b[:2] + (w, h)/2)  (integer cell);
      r = int(max(0, gaussian_radius(w, h)));  σ = (2r + 1)/6;
      Y[y, x] = exp(−(dx² + dy²)/(2σ²))  for dx = x − cx, dy = y − cy with |dx| ≤ r and |dy| ≤ r, else 0;
      kernel entries below float64-eps × (kernel max = 1) are set to 0 (never triggers: |exponent| < 9).
    The kernel is drawn at the integer centre with border clipping and combined by element-wise max with a zero
    map. A centre cell outside the map still draws the part of the kernel that overlaps the map — that is what the
    official slicing in ``CenterNetHeatMap.draw_gaussian`` does (nothing is drawn only when the kernel misses the
    map entirely); the shipped jitter never puts the centre outside.
    The official code evaluates the kernel in float64 and casts to float32; here the exponent
    −18·(dx² + dy²)/(2r + 1)² is formed exactly in float32 and only ``exp`` rounds (≤ 1 float32 ulp apart).
    """
    boxes = jnp.asarray(boxes_xywh, jnp.float32)
    b = boxes * size
    wh = b[:, 2:]
    centre = jnp.round(b[:, :2] + wh / 2).astype(jnp.int32)  # jnp.round is half-to-even, like torch.round
    radius = jnp.maximum(gaussian_radius(wh[:, 0], wh[:, 1]), 0).astype(jnp.int32)  # truncation toward 0

    cells = jnp.arange(size, dtype=jnp.int32)
    dx = cells[None, None, :] - centre[:, 0, None, None]  # (B, 1, S)
    dy = cells[None, :, None] - centre[:, 1, None, None]  # (B, S, 1)
    r = radius[:, None, None]
    inside = (jnp.abs(dx) <= r) & (jnp.abs(dy) <= r)
    diameter = (2 * r + 1).astype(jnp.float32)
    exponent = -(18.0 * (dx * dx + dy * dy).astype(jnp.float32)) / (diameter * diameter)  # −d²/(2σ²), σ = δ/6
    kernel = jnp.exp(exponent)
    kernel = jnp.where(kernel < FLOAT64_EPS, 0.0, kernel)  # the kernel's max is exp(0) = 1
    return jnp.where(inside, jnp.maximum(kernel, 0.0), 0.0).astype(jnp.float32)


def pairwise_sum(x):
    """Sum of all elements of ``x`` by pairwise (tree) addition in the input dtype.

    XLA's CPU reduction accumulates nearly sequentially, so a float32 sum of a few thousand terms drifts by
    ~1e-6 relative; PyTorch's CPU ``sum`` is a cascade sum with error O(log n·eps). Summing pairwise (zero-padded to a
    power of two) keeps the result within a few ulps of the exact sum, hence of PyTorch's.
    """
    x = jnp.ravel(jnp.asarray(x))
    n = max(1, 1 << (x.size - 1).bit_length()) if x.size else 1
    x = jnp.pad(x, (0, n - x.size))
    while x.size > 1:
        x = x[: x.size // 2] + x[x.size // 2 :]
    return x[0]


def focal_loss(score, target, alpha=2, beta=4):
    """CenterNet focal loss (official ``lib/utils/focal_loss.py`` ``FocalLoss``; docs/training.md#focal-loss), summed
    over the whole batch; any matching shapes.

    pos = [Y == 1], neg = [Y < 1], p = max(score, 1e-12) (lower clamp only),
    L_pos = Σ log(p)·(1 − p)^α·pos,  L_neg = Σ log(1 − p)·p^α·(1 − Y)^β·neg,  n = Σ pos;
    loss = −(L_pos + L_neg)/n if n > 0 else −L_neg.
    The two sums use :func:`pairwise_sum` so that they match PyTorch's accurate float32 sum.
    """
    score = jnp.asarray(score, jnp.float32)
    target = jnp.asarray(target, jnp.float32)
    pos = (target == 1).astype(jnp.float32)
    neg = (target < 1).astype(jnp.float32)
    neg_weights = (1 - target) ** beta
    p = jnp.where(score >= 1e-12, score, jnp.float32(1e-12))  # clamp(min=1e-12) with torch's gradient
    pos_loss = pairwise_sum(jnp.log(p) * (1 - p) ** alpha * pos)
    neg_loss = pairwise_sum(jnp.log(1 - p) * p**alpha * neg_weights * neg)
    num_pos = jnp.sum(pos)
    # The untaken branch is kept finite (num_pos ≥ 1) so gradients through jnp.where stay NaN-free.
    with_pos = -(pos_loss + neg_loss) / jnp.maximum(num_pos, 1.0)
    return jnp.where(num_pos == 0, -neg_loss, with_pos)


def giou_loss(pred_xyxy, gt_xyxy):
    """GIoU loss on paired x1y1x2y2 boxes ``(N, 4)``: returns ``(mean(1 − GIoU), iou)`` with iou of shape (N,).

    The official loss asserts x2 ≥ x1, y2 ≥ y1 and, if that raises, the actor replaces the loss (and IoU) by 0.
    With sigmoid sizes and a [0, 1]-clamped GT the assertion cannot fail, so this is not emulated.
    """
    giou, iou = generalized_box_iou(pred_xyxy, gt_xyxy)
    return jnp.mean(1 - giou), iou


def l1_loss(pred_xyxy, gt_xyxy):
    """``F.l1_loss`` (reduction mean): mean of |pred − gt| over all coordinates of all boxes."""
    return jnp.mean(jnp.abs(jnp.asarray(pred_xyxy) - jnp.asarray(gt_xyxy)))


def division_entropy_loss(interaction_ratio, eps=1e-5):
    """The official actor's optional division regulariser (``GRMActor.compute_losses(..., entropy=True)`` in
    ``lib/train/actors/grm.py``; off in every shipped config):

        L_entropy = mean over (batch, layers) of 1 + r·log2(r + eps) + (1 − r)·log2(1 − r + eps)

    i.e. 1 − H(r) in bits for each layer's interaction ratio r (the fraction of search tokens that interact with
    the template): ≈ 0 at r = 0.5, ≈ 1 when a layer lets every token or none interact. Its gradient reaches the
    division MLPs through the straight-through ratio (grm_jax/models/relation.py ``gumbel_hard``).
    """
    r = jnp.asarray(interaction_ratio, jnp.float32)
    return jnp.mean(1.0 + r * jnp.log2(r + eps) + (1.0 - r) * jnp.log2(1.0 - r + eps))


def division_ratio_loss(divide_logp, target: float):
    """A pull of every division layer's expected interaction ratio towards ``target`` (not in the official code;
    after the ratio loss of DynamicViT, Rao et al., NeurIPS 2021; off unless ``config.train.ratio_weight``):

        L_ratio = mean over (layers, batch) of (mean over search tokens of p1 − ρ)²,   p1 = exp(ℓ1)

    on the noise-free probabilities ``divide_logp`` (L−1, B, Ns, 2) that the tracker's argmax decides by, not on the
    Gumbel-sampled decisions: a pull on the sampled ratio is met by logits that put every token on the same side of
    0 (the noise alone then gives the ratio), and the noise-free argmax lets every token or none interact. With
    ρ = 0.5 it removes a layer's common drift and leaves the per-token differences to decide the division.
    """
    p1 = jnp.exp(jnp.asarray(divide_logp, jnp.float32)[..., 1])
    return jnp.mean(jnp.square(jnp.mean(p1, axis=-1) - target))


def division_logit_loss(divide_logp):
    """A bound on the division logits (not in the official code; off unless ``config.train.logit_weight``):

        L_logit = mean over (layers, batch, search tokens) of (ℓ1 − ℓ0)²

    Unchecked, the gap grows to hundreds within a thousand steps on the demo data (measured), where softmax and
    its straight-through gradient are exactly 0 or 1 and the division can never change again.
    """
    logp = jnp.asarray(divide_logp, jnp.float32)
    return jnp.mean(jnp.square(logp[..., 1] - logp[..., 0]))


def box_token_labels(gt_xywh, grid: int, margin: float = 0.0):
    """1 for each search token whose centre lies in the ground-truth box grown by ``margin`` tokens on every side,
    else 0: (B, grid²) float32, tokens in row-major order (the ViT's search tokens).

    Token (r, c) has its centre at ((c + ½)/G, (r + ½)/G) in the crop's normalised coordinates; the box is
    normalised (x1, y1, w, h) as ``search_anno``: inside iff x1 − m/G ≤ (c + ½)/G ≤ x1 + w + m/G (and so in y).
    """
    gt = jnp.asarray(gt_xywh, jnp.float32)
    centres = (jnp.arange(grid, dtype=jnp.float32) + 0.5) / grid
    grow = margin / grid

    def inside(lo, size):
        return (centres >= lo[:, None] - grow) & (centres <= lo[:, None] + size[:, None] + grow)

    rows, cols = inside(gt[:, 1], gt[:, 3]), inside(gt[:, 0], gt[:, 2])
    return (rows[:, :, None] & cols[:, None, :]).reshape(gt.shape[0], grid * grid).astype(jnp.float32)


def division_box_loss(divide_logp, gt_xywh, grid: int, margin: float = 0.0):
    """A supervised division (not in the official code; off unless ``config.train.box_division_weight``): each
    division layer is taught that the tokens of the target (:func:`box_token_labels`, y) interact and the others
    do not, as a class-balanced negative log-likelihood of its noise-free log-probabilities ℓ (L−1, B, Ns, 2):

        L_box = mean over layers and batch of ½·[Σ y·(−ℓ1) / Σ y + Σ (1 − y)·(−ℓ0) / Σ (1 − y)]

    (a sum over tokens with no token of a class counts as 0 for that class).
    """
    logp = jnp.asarray(divide_logp, jnp.float32)
    y = box_token_labels(gt_xywh, grid, margin)[None]
    inside = jnp.sum(y * -logp[..., 1], axis=-1) / jnp.maximum(jnp.sum(y, axis=-1), 1.0)
    outside = jnp.sum((1.0 - y) * -logp[..., 0], axis=-1) / jnp.maximum(jnp.sum(1.0 - y, axis=-1), 1.0)
    return jnp.mean(0.5 * (inside + outside))


def grm_loss(
    pred_boxes_cxcywh,
    score_map,
    gt_xywh,
    search_size,
    stride=16,
    giou_weight=2.0,
    l1_weight=5.0,
    focal_weight=1.0,
):
    """The GRM actor's objective (official ``lib/train/actors/grm.py`` ``GRMActor.compute_losses``;
    docs/training.md#losses): ``total = w_giou·L_giou + w_l1·L_l1 + w_focal·L_focal``.

    Args:
      pred_boxes_cxcywh: ``(B, Q, 4)`` or ``(B, 4)`` normalised (cx, cy, w, h) from the model.
      score_map: ``(B, S, S, 1)`` NHWC score map (after the clamped sigmoid), S = search_size // stride.
      gt_xywh: ``(B, 4)`` normalised (x1, y1, w, h) GT in the search crop (may extend beyond [0, 1]).
    The GT for GIoU and L1 is (x1, y1, x1 + w, y1 + h) clamped to [0, 1] and repeated for every query; the
    Gaussian heat-map target is built from the unclamped ``gt_xywh``. The official actor replaces the GIoU term by 0
    when its x2 ≥ x1 assertion raises; that cannot happen with sigmoid sizes and is not emulated.

    Returns ``(total, status)`` with status keys ``'Ls/total'``, ``'Ls/giou'``, ``'Ls/l1'``, ``'Ls/loc'`` (focal)
    and ``'IoU'`` (mean IoU), all scalars with gradients stopped.
    """
    pred_boxes = jnp.asarray(pred_boxes_cxcywh, jnp.float32)
    gt_xywh = jnp.asarray(gt_xywh, jnp.float32)
    num_queries = pred_boxes.shape[1] if pred_boxes.ndim == 3 else 1
    pred_xyxy = cxcywh_to_xyxy(pred_boxes).reshape(-1, 4)
    gt_xyxy = jnp.clip(jnp.repeat(xywh_to_xyxy(gt_xywh), num_queries, axis=0), 0.0, 1.0)

    giou, iou = giou_loss(pred_xyxy, gt_xyxy)
    l1 = l1_loss(pred_xyxy, gt_xyxy)
    heatmap = gaussian_heatmap(gt_xywh, search_size // stride)
    focal = focal_loss(score_map, heatmap[..., None])
    total = giou_weight * giou + l1_weight * l1 + focal_weight * focal

    status = {
        "Ls/total": total,
        "Ls/giou": giou,
        "Ls/l1": l1,
        "Ls/loc": focal,
        "IoU": jnp.mean(iou),
    }
    return total, jax.tree_util.tree_map(jax.lax.stop_gradient, status)
