"""Machine-specific fast paths for the model's operations, kept apart from the paper's maths
in :mod:`deblur_cli.models`; each has its reference form beside it for tests."""
