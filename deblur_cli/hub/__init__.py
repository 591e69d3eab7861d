"""Weights: the registry of named weights, downloads from the Hugging Face Hub with sha256
checks, and loading a model from a safetensors file."""
