"""The small GRM of the official reference fixtures (``tests/fixtures/official/grm_tiny``).

Same code path as GRM-B/256 with smaller sizes: embed dim 192, depth 4, 3 heads, template 64 px / search 128 px
(4x4 + 8x8 tokens), head channels 64, predictor 384 → 384 → 192 → 2. Used by the parity tests and the demo.

Demo:   make demo
"""

from grm_jax.config import base_config, set_tiny_model


def get_config(arg=None):
    del arg
    c = base_config()
    set_tiny_model(c.model)
    c.train.batch_size = 2
    return c
