"""Training: pretraining and fine-tuning loops, optimizers and schedules, strategies, checkpoints, metrics."""
