"""The ``screwops`` command: one front door to the stack, the data and the pipeline."""
