"""Synthetic blur and datasets for training and evaluation."""
