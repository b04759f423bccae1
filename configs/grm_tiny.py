"""The small GRM of the official reference fixtures (``tests/fixtures/official/grm_tiny``).

Same code path as GRM-B/256 with smaller sizes: embed dim 192, depth 4, 3 heads, template 64 px / search 128 px
(4x4 + 8x8 tokens), head channels 64, predictor 384 → 384 → 192 → 2. Used by the parity tests and the demo.

Demo:   make demo
"""

from grm_jax.config import base_config


def get_config(arg=None):
    del arg
    c = base_config()
    c.model.backbone = "custom"
    c.model.embed_dim = 192
    c.model.depth = 4
    c.model.num_heads = 3
    c.model.template_size = 64
    c.model.search_size = 128
    c.model.head_channels = 64
    c.model.pretrain_file = ""
    c.train.batch_size = 2
    return c
