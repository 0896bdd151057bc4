"""microforge.tune"""
