"""microforge.cluster"""
