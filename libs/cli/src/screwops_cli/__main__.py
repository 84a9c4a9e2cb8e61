"""``python -m screwops_cli``, the same as the ``screwops`` command."""

from screwops_cli.main import app

app(prog_name="screwops")
