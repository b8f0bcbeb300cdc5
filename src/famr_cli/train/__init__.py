"""Training: the one loop every method shares, the optimizer/schedule factory, the original model."""
