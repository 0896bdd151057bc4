"""Training recipes of the ``dreambooth`` workload (``<name>.json``: option values and batch size)."""
