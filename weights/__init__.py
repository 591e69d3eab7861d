"""Shipped weights: the registry (registry.json), the model card and the bundled default model."""
