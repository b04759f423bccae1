"""GRM, every variant in one file (the big_vision way): ``--config configs/grm.py:VARIANT``.

Variants (docs/model.md#configurations, docs/training.md#training-recipes, docs/tracking.md#division-threshold):

* ``B/256``: GRM (ViT-B/16, 256 px search), the official ``vitb_256_ep300`` recipe.
  Paper/README: LaSOT AUC 69.9, TrackingNet AUC 84.0, AVisT AUC 54.5, NfS30 65.6, UAV123 70.2.
* ``B/256-got``: GRM-GOT, the official ``vitb_256_got_ep100`` recipe: GOT-10k train only, 100 epochs.
  Paper/README: GOT-10k AO 73.4, SR0.5 82.9, SR0.75 70.4.
* ``L/320``: GRM-L320 (ViT-L/16, 320 px search), the official ``vitl_320_ep300`` recipe.
  Paper/README: LaSOT AUC 71.4, TrackingNet AUC 84.4, AVisT AUC 55.1, NfS30 66.0, UAV123 72.2.
* ``tiny`` (= ``tiny/128``): the small GRM of the official reference fixtures (``tests/fixtures/official/grm_tiny``):
  the same code path at embed dim 192, depth 4, 3 heads, template 64 px / search 128 px (4x4 + 8x8 tokens), head
  channels 64, predictor 384 → 384 → 192 → 2. Used by the parity tests; the demo (configs/grm_tiny_synthetic.py)
  builds on it.

A variant is ``SIZE/RESOLUTION[-got]``: SIZE picks the ViT and its template size (:data:`VIT`; the official models
keep a 128 px template at every search size: L/320 is 128 + 320 px), RESOLUTION is the search size in pixels (a
multiple of the 16 px patch), ``-got`` the GOT-10k-only recipe. The search crop settings of a resolution come from
:data:`SEARCH_CROP` (256 and 320 are official; any other keeps the 256 px ones); only ``B/256`` has the
official per-dataset division thresholds (the other official yamls have no ``TEST.HYPER``; ``tiny`` keeps them, as
it keeps the rest of the ``B/256`` recipe).

Train:  python train.py --config configs/grm.py:B/256 --workdir runs/grm_b256
Eval:   python eval.py --config configs/grm.py:B/256 --checkpoint runs/grm_b256 --dataset lasot
        python eval.py --config configs/grm.py:B/256-got --checkpoint runs/grm_b256_got --dataset got10k_test
"""

from grm_jax.config import BACKBONES, base_config

# SIZE: (model.backbone, (embed_dim, depth, num_heads), head_channels, template size, train.batch_size per device,
#        default search size)
VIT = {
    "B": ("vit_base", BACKBONES["vit_base"], 256, 128, 40, 256),
    "L": ("vit_large", BACKBONES["vit_large"], 256, 128, 10, 320),  # official batch 10: ViT-L/320 fills the GPU
    "tiny": ("custom", (192, 4, 3), 64, 64, 2, 128),
}
# search size: (DATA.SEARCH.FACTOR = TEST.SEARCH_FACTOR, DATA.SEARCH.CENTER_JITTER, DATA.SEARCH.SCALE_JITTER)
SEARCH_CROP = {256: (4.0, 3.0, 0.25), 320: (5.0, 4.5, 0.5)}
RECIPES = ("", "got")


def parse_variant(arg: str | None) -> tuple[str, int, str]:
    """``"B/256-got"`` → ``("B", 256, "got")``; no argument is ``B/256``; ``tiny`` is ``tiny/128``."""
    variant = arg or "B/256"
    spec, _, recipe = variant.partition("-")
    size, _, resolution = spec.partition("/")
    if size not in VIT:
        raise ValueError(f"configs/grm.py: variant {variant!r}: size {size!r} is not one of {list(VIT)}")
    if recipe not in RECIPES:
        raise ValueError(f"configs/grm.py: variant {variant!r}: recipe {recipe!r} is not one of {list(RECIPES[1:])}")
    if not resolution:
        search = VIT[size][-1]
    elif resolution.isdigit() and int(resolution) > 0 and int(resolution) % 16 == 0:
        search = int(resolution)
    else:
        raise ValueError(f"configs/grm.py: variant {variant!r}: resolution {resolution!r} is not a positive "
                         "multiple of 16 (the search size in pixels)")
    return size, search, recipe


def get_config(arg=None):
    size, search, recipe = parse_variant(arg)
    backbone, (embed_dim, depth, num_heads), head_channels, template, batch_size, _ = VIT[size]
    c = base_config()
    m = c.model
    m.backbone, m.embed_dim, m.depth, m.num_heads = backbone, embed_dim, depth, num_heads
    m.head_channels = head_channels
    m.search_size, m.template_size = search, template
    c.train.batch_size = batch_size
    factor, center_jitter, scale_jitter = SEARCH_CROP.get(search, SEARCH_CROP[256])
    c.data.search.factor = c.test.search_factor = factor
    c.data.search.center_jitter, c.data.search.scale_jitter = center_jitter, scale_jitter
    if recipe == "got":
        c.data.datasets = ("GOT10K_train",)
        c.data.ratios = (1.0,)
        c.train.epochs = 100
        c.train.lr_drop_epoch = 80
    if recipe or size == "L":
        # TEST.HYPER: of the official yamls only vitb_256_ep300's has one (tiny follows that recipe); without it every
        # dataset takes the default 0 of the official lib/config/grm/config.py (argmax selection).
        for key in c.test.hyper:
            c.test.hyper[key] = 0.0
    return c
