"""Training: optimizer with the official parameter groups, the per-device step, the loop and checkpoints."""
