"""Evaluator: a trained run's test-split metrics, Triton infra validation under the staging name,
comparison with the model in production, and the approval gate."""
