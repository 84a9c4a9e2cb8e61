"""Entry point: ``python -m screwops_synth generate …``."""

from screwops_synth.cli import app

app(prog_name="screwops-synth")
