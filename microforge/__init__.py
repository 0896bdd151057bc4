"""microforge: a Ray platform for synthetic microscopy data and the models trained on it."""

__version__ = "0.1.0"

__all__ = ["__version__"]
