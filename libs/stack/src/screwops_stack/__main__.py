"""Entry point: ``python -m screwops_stack``."""

from screwops_stack.cli import app

app(prog_name="screwops-stack")
