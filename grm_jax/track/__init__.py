"""Tracking-time procedure of GRM (docs/tracking.md): windowing, decoding and mapping boxes back to the frame."""
