"""Training infrastructure: device choice, seeding, the poly-lr SGD, DDP setup, checkpoints."""
