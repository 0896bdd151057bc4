"""microforge.serve"""
