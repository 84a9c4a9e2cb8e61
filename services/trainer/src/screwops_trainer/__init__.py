"""Trainer: a small CNN trained from scratch on a validated dataset version, one deterministic,
reusable run per (model, data, params), with per-epoch metrics in MongoDB and the SavedModel in
MinIO."""
