"""The configuration schema shared by every experiment, and its validation.

Files in ``configs/`` start from :func:`base_config` (the official defaults: docs/model.md#configurations,
docs/training.md#training-recipes, docs/tracking.md#division-threshold) and change only what their experiment changes:
``configs/grm.py:VARIANT`` the official models (``B/256``, ``B/256-got``, ``L/320``) and the fixtures' ``tiny``.
Field names follow the official yaml keys in lower case (``DATA.SEARCH.FACTOR`` → ``config.data.search.factor``).
"""

from __future__ import annotations

import math

import ml_collections

# The largest config.data.synthetic.min_contrast / val_min_contrast (grey levels; grm_jax/data/synthetic.py
# Difficulty). Here rather than there so that importing the config does not import OpenCV.
MAX_CONTRAST = 200.0

BACKBONES = {
    # name: (embed_dim, depth, num_heads) of the official ViTs (docs/model.md#backbone); config.model.backbone names
    # one of them (its sizes must match) or "custom" (any sizes).
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
}
TGT_TYPES = ("allmax", "allavg", "roimax", "roiavg")
ATTENTION_IMPLS = ("masked", "fused")
DTYPES = ("float32", "bfloat16")
POS_EMBED_INITS = ("normal", "sincos")  # config.train.pos_embed_init
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def base_config() -> ml_collections.ConfigDict:
    """The official ``vitb_256_ep300`` recipe; every experiment config starts here."""
    c = ml_collections.ConfigDict()

    c.model = ml_collections.ConfigDict()
    c.model.backbone = "vit_base"
    c.model.embed_dim = 768
    c.model.depth = 12
    c.model.num_heads = 12
    c.model.mlp_ratio = 4.0
    c.model.qkv_bias = True
    c.model.patch_size = 16  # MODEL.BACKBONE.STRIDE
    c.model.pos_embed_grid = 14  # the ViT is built for 224 px: a 14x14 pos_embed table (+1 cls row)
    c.model.drop_path_rate = 0.1
    c.model.tgt_type = "allmax"
    c.model.divide_hidden = (384, 192)
    c.model.head_channels = 256  # MODEL.HEAD.NUM_CHANNELS
    c.model.template_size = 128
    c.model.search_size = 256
    c.model.attention = "masked"  # the official masked softmax (docs/model.md#masked-softmax)
    c.model.dtype = "float32"

    c.data = ml_collections.ConfigDict()
    c.data.datasets = ("LASOT", "GOT10K_vot_train", "COCO17", "TRACKINGNET")
    c.data.ratios = (1.0, 1.0, 1.0, 1.0)
    c.data.sample_per_epoch = 60000
    c.data.max_sample_interval = 200
    c.data.mean = IMAGENET_MEAN
    c.data.std = IMAGENET_STD
    c.data.num_workers = 16
    c.data.data_dir = "data/tfds"  # prepared (TFDS array_record) datasets
    # Probability of a colour-channel permutation shared by a pair's frames (not in the official augmentation; 0 =
    # off, the official sample stream): a small synthetic set has few colour schemes to learn from.
    c.data.channel_shuffle_prob = 0.0
    # The official per-crop flip is rolled separately for template and search (a quirk, docs/training.md#per-crop-flip):
    # False rolls it once for both crops, so the search is never mirrored with respect to its template.
    c.data.independent_crop_flip = True
    # Not official: a random gain and offset per colour channel, shared by a pair's frames (0 = off;
    # grm_jax/data/transforms.py AugmentOptions.colour_jitter).
    c.data.colour_jitter = 0.0
    # Not official: probability of transposing both frames of a pair (AugmentOptions.transpose_prob; 0 = off).
    c.data.transpose_prob = 0.0
    # Not official: both frames of a pair stretched by (e^a, e^-a), a ~ U(-s, s) (AugmentOptions.aspect_jitter;
    # 0 = off).
    c.data.aspect_jitter = 0.0
    # Not official: probability of one random rotation of the colour cube per pair
    # (AugmentOptions.colour_rotation_prob; 0 = off).
    c.data.colour_rotation_prob = 0.0
    # The built-in synthetic dataset (`SYNTHETIC` in datasets; its val split is the `synthetic` benchmark).
    # max_distractors .. min_contrast: grm_jax.data.synthetic.Difficulty (the defaults are the hard case);
    # val_min_contrast, when not 0, is the val split's min_contrast (grm_jax/data/datasets/synthetic_tracking.py).
    c.data.synthetic = ml_collections.ConfigDict(
        dict(num_train=200, num_val=20, seed=0, min_length=50, max_length=300, max_distractors=3,
             distractor_palette="target", max_occlusions=2, exit_probability=0.5, min_contrast=0.0,
             val_min_contrast=0.0))
    c.data.template = ml_collections.ConfigDict(
        dict(factor=2.0, size=c.model.get_ref("template_size"), center_jitter=0.0, scale_jitter=0.0))
    c.data.search = ml_collections.ConfigDict(
        dict(factor=4.0, size=c.model.get_ref("search_size"), center_jitter=3.0, scale_jitter=0.25))

    c.train = ml_collections.ConfigDict()
    c.train.optimizer = "adamw"
    c.train.lr = 4e-4
    c.train.backbone_multiplier = 0.1
    c.train.divide_multiplier = 1.0  # the division MLPs' rate = lr × this (official: 1, they train at lr)
    # Weight of the official actor's optional division-entropy term (grm_jax.losses.division_entropy_loss);
    # 0 = off, as in every official config; 1 = the official `entropy=True`.
    c.train.entropy_weight = 0.0
    # Not in the official code (grm_jax/losses.py; 0 = off): a pull of each division layer's expected interaction
    # ratio towards ratio_target (division_ratio_loss), and a bound on the division logits (division_logit_loss).
    c.train.ratio_weight = 0.0
    c.train.ratio_target = 0.5
    c.train.logit_weight = 0.0
    # Not in the official code: a supervised division (division_box_loss), each division layer taught that the
    # search tokens in the target box (grown by box_division_margin tokens) interact and the others do not.
    c.train.box_division_weight = 0.0
    c.train.box_division_margin = 0.0
    # Temperature of the division's straight-through Gumbel-softmax (grm_jax/models/relation.py gumbel_hard): the
    # decisions do not depend on it, only their gradient; official 1.
    c.train.gumbel_tau = 1.0
    # Factor s on that Gumbel noise, softmax((ℓ + s·g)/τ): s = 0 trains with the tracker's noise-free division
    # (argmax ℓ); official 1.
    c.train.gumbel_scale = 1.0
    # A bound c on the gradient that reaches each hard decision through the attention mask, clip(∂L/∂d, −c, c);
    # 0 = none (official). The mask's gradient through the official masked softmax grows as 1/(Σ visible + ε): on
    # the demo data single tokens reached 8.5e8 where a query's visible keys held little of its attention
    # (docs/training.md).
    c.train.division_grad_clip = 0.0
    # The division MLPs' learning rate is 0 before this step (their initial, near-even division meanwhile); 0 = from
    # the start (official).
    c.train.divide_start_step = 0
    # Added to the interact logit of every division MLP at initialisation (0 = official init; see
    # grm_jax/train/loop.py with_divide_bias).
    c.train.divide_init_bias = 0.0
    # Starting values of the position tables of a model trained from scratch: "normal" (N(0, 0.02²), the fresh
    # init) or "sincos" (MAE's 2-D sine-cosine pos_embed, resized to pos_embed_z / pos_embed_x as the official
    # finetune_track resizes a pretrained one; grm_jax/train/loop.py with_sincos_pos_embed). Ignored for the
    # tables an init_checkpoint brings.
    c.train.pos_embed_init = "normal"
    c.train.weight_decay = 1e-4
    c.train.epochs = 300
    c.train.lr_drop_epoch = 240
    c.train.lr_max_drops = 0  # 0: ×0.1 every lr_drop_epoch epochs, as the official StepLR
    c.train.warmup_steps = 0  # linear warm-up of every group's rate over this many steps; 0 = none (official)
    c.train.scheduler = "step"
    c.train.batch_size = 40  # per device, as the official BATCH_SIZE is per GPU
    c.train.grad_clip_norm = 0.1
    c.train.giou_weight = 2.0
    c.train.l1_weight = 5.0
    c.train.focal_weight = 1.0
    c.train.seed = 42
    c.train.sync_batch_stats = False  # official DDP: BatchNorm statistics per device
    c.train.remat = "none"  # "block": keep only block outputs for the backward pass (less memory, more time)
    c.train.parallel = "pmap"  # or "shard_map" (jit + shard_map on a 1-D mesh; needs sync_batch_stats)
    c.train.init_checkpoint = ""  # Orbax dir (e.g. from `python -m grm_jax.convert init-backbone`); "" = fresh
    c.train.max_steps = 0  # 0: epochs × steps_per_epoch
    c.train.checkpoint_every_steps = 1000
    c.train.keep_last = 5  # the official run keeps the last 5 epochs ...
    c.train.keep_every_epochs = 100  # ... and every 100th
    c.train.log_every_steps = 50
    c.train.distributed = False  # several processes: jax.distributed.initialize() (grm_jax/distributed.py)
    c.train.coordinator_address = ""  # HOST:PORT of process 0; "" = detected (TPU pods, SLURM, ...)
    c.train.num_processes = 0  # 0 = detected
    c.train.process_id = -1  # -1 = detected

    c.eval = ml_collections.ConfigDict()
    c.eval.after_training = False  # train.py evaluates the final checkpoint on eval.dataset
    c.eval.dataset = "synthetic"
    c.eval.batch_size = 8  # sequences tracked together
    c.eval.crop = "host"  # "host" (OpenCV, exact) or "device"
    c.eval.max_sequences = 0  # 0: all
    c.eval.baselines = False  # also score the untrained model and the first box; division statistics

    c.test = ml_collections.ConfigDict()
    c.test.template_factor = 2.0
    c.test.template_size = c.model.get_ref("template_size")
    c.test.search_factor = 4.0
    c.test.search_size = c.model.get_ref("search_size")
    # Not official (1.0 = the official tracker, which takes the predicted size as it is): the fraction of the change
    # of width and height that a frame's prediction makes, w ← w + λ·(w_pred − w), as SiamFC's and SiamRPN's
    # trackers smooth the scale (docs/tracking.md#size-update).
    c.test.size_update = 1.0
    # TEST.HYPER: the division threshold per dataset (docs/tracking.md#division-threshold); keys are `--dataset`
    # names upper-cased.
    c.test.hyper = ml_collections.ConfigDict(
        dict(DEFAULT=0.0, LASOT=0.4, NFS=0.60, UAV=0.55, AVIST=0.4, TRACKINGNET=0.0, GOT10K_TEST=0.0))
    c.lock()  # a misspelt key is an error, not a silently added field
    return c


def test_threshold(config: ml_collections.ConfigDict, dataset: str) -> float:
    """τ = TEST.HYPER[dataset.upper()] if present, else TEST.HYPER.DEFAULT, as the official
    ``lib/test/tracker/grm.py`` ``GRM.__init__`` does (docs/tracking.md#division-threshold)."""
    hyper = config.test.hyper
    key = dataset.upper()
    return float(hyper[key]) if key in hyper else float(hyper.DEFAULT)


def _check_choice(value, choices, key):
    if value not in choices:
        raise ValueError(f"config.{key} = {value!r} is not one of {list(choices)}")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise ``ValueError`` naming the first offending key if ``config`` cannot describe a GRM."""
    m = config.model
    if m.backbone not in BACKBONES and m.backbone != "custom":
        raise ValueError(f"config.model.backbone = {m.backbone!r} is not one of {list(BACKBONES) + ['custom']}")
    _check_choice(m.tgt_type, TGT_TYPES, "model.tgt_type")
    _check_choice(m.attention, ATTENTION_IMPLS, "model.attention")
    _check_choice(m.dtype, DTYPES, "model.dtype")
    for key in ("embed_dim", "depth", "num_heads", "patch_size", "head_channels", "template_size", "search_size",
                "pos_embed_grid"):
        value = m[key]
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"config.model.{key} = {value!r} must be a positive integer")
    if m.backbone in BACKBONES and (m.embed_dim, m.depth, m.num_heads) != BACKBONES[m.backbone]:
        raise ValueError(f"config.model.backbone = {m.backbone!r} is embed_dim, depth, num_heads = "
                         f"{BACKBONES[m.backbone]}, not {(m.embed_dim, m.depth, m.num_heads)} (set it to 'custom' for "
                         "other sizes)")
    if m.depth < 2:
        raise ValueError(f"config.model.depth = {m.depth} must be >= 2 (block 0 is plain, the rest divide)")
    if m.embed_dim % m.num_heads:
        raise ValueError(f"config.model.embed_dim = {m.embed_dim} is not divisible by "
                         f"config.model.num_heads = {m.num_heads}")
    for key in ("template_size", "search_size"):
        if m[key] % m.patch_size:
            raise ValueError(f"config.model.{key} = {m[key]} is not a multiple of "
                             f"config.model.patch_size = {m.patch_size}")
    if m.head_channels % 8:
        raise ValueError(f"config.model.head_channels = {m.head_channels} must be divisible by 8 "
                         "(the head halves it three times)")
    if not 0.0 <= m.drop_path_rate < 1.0:
        raise ValueError(f"config.model.drop_path_rate = {m.drop_path_rate} must be in [0, 1)")
    if len(tuple(m.divide_hidden)) != 2:
        raise ValueError(f"config.model.divide_hidden = {m.divide_hidden!r} must hold two widths")
    if "test" in config:
        for name, value in config.test.hyper.items():
            check_threshold(value, f"config.test.hyper.{name}")
        size_update = config.test.get("size_update", 1.0)
        _check_number(size_update, "test.size_update", 0.0, strict=True)
        if size_update > 1.0:
            raise ValueError(f"config.test.size_update = {size_update!r} must be a number in (0, 1] (1: the official "
                             "tracker)")
    if "train" in config:
        _validate_train(config)
    if "data" in config and "synthetic" in config.data:
        for key in ("min_contrast", "val_min_contrast"):
            value = config.data.synthetic[key]
            _check_number(value, f"data.synthetic.{key}", 0.0)
            if value > MAX_CONTRAST:
                raise ValueError(f"config.data.synthetic.{key} = {value!r} must be <= {MAX_CONTRAST:g} grey levels")
    if "eval" in config:
        e = config.eval
        _check_int(e.batch_size, "eval.batch_size", 1)
        _check_int(e.max_sequences, "eval.max_sequences", 0)
        _check_choice(e.crop, ("host", "device"), "eval.crop")


def check_threshold(value, name: str = "threshold") -> float:
    """The division threshold rule, for ``--threshold`` and ``config.test.hyper``: a number in [0, 1)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} = {value!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} = {value} must be in [0, 1)")
    return value


def _check_int(value, key: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"config.{key} = {value!r} must be an integer >= {minimum}")


def _check_number(value, key: str, minimum: float, strict: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum):
        raise ValueError(f"config.{key} = {value!r} must be a number {'>' if strict else '>='} {minimum}")


def _check_fraction(value, key: str) -> None:
    """A number in [0, 1] (a probability or a share)."""
    _check_number(value, key, 0.0)
    if value > 1:
        raise ValueError(f"config.{key} = {value!r} must be a number in [0, 1]")


def _validate_train(config: ml_collections.ConfigDict) -> None:
    """``config.train`` and the training part of ``config.data``: the first offending key, before anything runs."""
    t, d = config.train, config.data
    integers = (("batch_size", 1), ("epochs", 1), ("max_steps", 0), ("lr_drop_epoch", 1), ("lr_max_drops", 0),
                ("warmup_steps", 0), ("divide_start_step", 0), ("checkpoint_every_steps", 1), ("keep_last", 1),
                ("keep_every_epochs", 1), ("log_every_steps", 1), ("seed", 0))
    for key, minimum in integers:
        _check_int(t[key], f"train.{key}", minimum)
    numbers = (("lr", True), ("backbone_multiplier", True), ("divide_multiplier", True), ("weight_decay", False),
               ("grad_clip_norm", False), ("entropy_weight", False), ("ratio_weight", False), ("logit_weight", False),
               ("box_division_weight", False), ("giou_weight", False), ("l1_weight", False), ("focal_weight", False))
    for key, strict in numbers:
        _check_number(t[key], f"train.{key}", 0.0, strict)
    _check_fraction(t.ratio_target, "train.ratio_target")
    _check_number(t.gumbel_tau, "train.gumbel_tau", 0.0, True)
    _check_number(t.gumbel_scale, "train.gumbel_scale", 0.0)
    _check_number(t.division_grad_clip, "train.division_grad_clip", 0.0)
    _check_number(t.box_division_margin, "train.box_division_margin", 0.0)
    _check_choice(t.optimizer, ("adamw",), "train.optimizer")
    _check_choice(t.scheduler, ("step",), "train.scheduler")
    _check_choice(t.parallel, ("pmap", "shard_map"), "train.parallel")
    _check_choice(t.remat, ("none", "block"), "train.remat")
    _check_choice(t.pos_embed_init, POS_EMBED_INITS, "train.pos_embed_init")
    if t.pos_embed_init == "sincos" and config.model.embed_dim % 4:
        raise ValueError(f"config.train.pos_embed_init = 'sincos' needs config.model.embed_dim divisible by 4, "
                         f"got {config.model.embed_dim}")
    if t.parallel == "shard_map" and not t.sync_batch_stats:
        raise ValueError("config.train.parallel = 'shard_map' needs config.train.sync_batch_stats = True")
    _check_int(t.num_processes, "train.num_processes", 0)
    _check_int(t.process_id, "train.process_id", -1)
    if t.num_processes and t.process_id >= t.num_processes:
        raise ValueError(f"config.train.process_id = {t.process_id} must be < config.train.num_processes = "
                         f"{t.num_processes}")
    if t.coordinator_address and ":" not in t.coordinator_address:
        raise ValueError(f"config.train.coordinator_address = {t.coordinator_address!r} is not HOST:PORT")
    _check_int(d.sample_per_epoch, "data.sample_per_epoch", 1)
    _check_int(d.num_workers, "data.num_workers", 0)
    _check_fraction(d.channel_shuffle_prob, "data.channel_shuffle_prob")
    _check_fraction(d.colour_jitter, "data.colour_jitter")
    _check_fraction(d.transpose_prob, "data.transpose_prob")
    _check_fraction(d.aspect_jitter, "data.aspect_jitter")  # a stretch of at most e^±1 per axis
    _check_fraction(d.colour_rotation_prob, "data.colour_rotation_prob")
    _check_int(d.max_sample_interval, "data.max_sample_interval", 1)
    if len(tuple(d.datasets)) == 0:
        raise ValueError("config.data.datasets is empty")
    if len(tuple(d.ratios)) != len(tuple(d.datasets)):
        raise ValueError(f"config.data.ratios has {len(tuple(d.ratios))} entries for "
                         f"{len(tuple(d.datasets))} config.data.datasets")
    if any(not isinstance(r, (int, float)) or r < 0 for r in d.ratios) or not sum(d.ratios) > 0:
        raise ValueError(f"config.data.ratios = {tuple(d.ratios)} must be >= 0 with a positive sum")


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """``path/to/config.py[:arg]`` → that file's ``get_config(arg)``, as ``--config`` of the entry points reads it."""
    import importlib.util
    import pathlib

    path, _, arg = spec.partition(":")
    file = pathlib.Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"grm_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path!r} defines no get_config()")
    return module.get_config(arg or None)
