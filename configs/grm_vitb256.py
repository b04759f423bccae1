"""GRM (ViT-B/16, 256 px search), the official ``vitb_256_ep300`` recipe (docs/model.md#configurations,
docs/training.md#training-recipes, docs/tracking.md#division-threshold).

Train:  python train.py --config configs/grm_vitb256.py --workdir runs/grm_vitb256
Eval:   python eval.py --config configs/grm_vitb256.py --checkpoint runs/grm_vitb256 --dataset lasot
Paper/README: LaSOT AUC 69.9, TrackingNet AUC 84.0, AVisT AUC 54.5, NfS30 65.6, UAV123 70.2.
"""

from grm_jax.config import base_config


def get_config(arg=None):
    del arg
    return base_config()
