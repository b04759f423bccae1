"""Training data: TFDS builders, random-access sources, pair sampling, augmentation and the grain pipeline."""
