"""The SAPHN network (one module per paper concept) and its registered variants."""

from deblur_cli.models.saphn import SAPHN, SAPHNConfig
from deblur_cli.models.variants import (
    create_model,
    get_config,
    list_variants,
    randomize_zero_layers,
    register_variant,
)

__all__ = [
    "SAPHN",
    "SAPHNConfig",
    "create_model",
    "get_config",
    "list_variants",
    "randomize_zero_layers",
    "register_variant",
]
