"""microforge.trainers"""
