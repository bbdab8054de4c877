"""Training: models, losses, optimizers, the one training route, checkpoints, evaluation and explanation."""
