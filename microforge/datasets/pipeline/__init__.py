"""The 16-bit image pipeline: prepare, enhance, fix, analyze and split, each a Ray Data job over files."""
