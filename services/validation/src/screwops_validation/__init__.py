"""Validation: data assertions on a labeled dataset version, JSON and HTML reports, and the
deterministic stratified train/validation/test split a training run is fed."""
