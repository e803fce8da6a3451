"""Training wing: the cached clip sampler, the distillation losses and the training loop."""
