"""deblur: motion deblurring with SAPHN (Suin, Purohit, Rajagopalan, CVPR 2020).

Importing this package is cheap: torch is imported only when a model or the engine is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deblur_cli._version import __version__

if TYPE_CHECKING:
    from deblur_cli.inference.deblurrer import Deblurrer

__all__ = ["Deblurrer", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Deblurrer":
        from deblur_cli.inference.deblurrer import Deblurrer

        return Deblurrer
    raise AttributeError(name)
