"""GRM-L320 (ViT-L/16, 320 px search), the official ``vitl_320_ep300`` recipe (docs/model.md#configurations,
docs/training.md#training-recipes, docs/tracking.md#division-threshold).

Train:  python train.py --config configs/grm_vitl320.py --workdir runs/grm_vitl320
Eval:   python eval.py --config configs/grm_vitl320.py --checkpoint runs/grm_vitl320 --dataset lasot
Paper/README: LaSOT AUC 71.4, TrackingNet AUC 84.4, AVisT AUC 55.1, NfS30 66.0, UAV123 72.2.
"""

from grm_jax.config import base_config


def get_config(arg=None):
    del arg
    c = base_config()
    c.model.backbone = "vit_large"
    c.model.embed_dim = 1024
    c.model.depth = 24
    c.model.num_heads = 16
    c.model.search_size = 320
    c.model.pretrain_file = "mae_pretrain_vit_large.pth"
    c.data.search.factor = 5.0
    c.data.search.center_jitter = 4.5
    c.data.search.scale_jitter = 0.5
    c.train.batch_size = 10
    c.test.search_factor = 5.0
    for key in c.test.hyper:
        c.test.hyper[key] = 0.0
    return c
