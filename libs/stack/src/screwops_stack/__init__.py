"""Local stack."""
