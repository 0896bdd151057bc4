"""CARS tissue data: the 16-bit renderer of thyroid-like CARS images."""
