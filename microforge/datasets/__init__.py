"""microforge.datasets"""
