"""Training: recipes, losses, callbacks, exact resume, data parallelism and the training loop."""
