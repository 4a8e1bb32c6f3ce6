"""Keras callbacks: validation + checkpoints, run state for resume, NaN guard, noise split."""
