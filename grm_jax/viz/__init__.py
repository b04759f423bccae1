"""Pictures of what the tracker does: token division grids (:mod:`.tokens`), tracking overlay videos
(:mod:`.video`) and training curves (:mod:`.curves`). Images are (H,W,3) uint8 RGB NumPy arrays throughout."""
