"""Tracking-time procedure of GRM (GRM_SPEC §5): windowing, decoding and mapping boxes back to the frame."""
