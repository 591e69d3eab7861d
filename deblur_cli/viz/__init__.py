"""What the network did: recording its internal maps and rendering them as pictures.

``recording`` (which maps; forward hooks that record them from an ordinary pass), ``geometry``
(measures of the maps: tap directions and spreads, kernel variance), ``drawing`` (colour maps,
legends, overlays, the contact sheet), ``rendering`` (the maps as named pictures and files) and
``pipeline`` (one image in, its maps out: ``deblur viz``).
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it. Imported on first use, so that importing one
# submodule does not pull OpenCV, Pillow or torch in.
_EXPORTS = {
    "MapRecorder": "deblur_cli.viz.recording",
    "MapSelection": "deblur_cli.viz.recording",
    "RenderedMaps": "deblur_cli.viz.rendering",
    "check_selection": "deblur_cli.viz.recording",
    "collect_maps": "deblur_cli.viz.recording",
    "fit_for_viz": "deblur_cli.viz.pipeline",
    "map_recorder": "deblur_cli.viz.recording",
    "render_maps": "deblur_cli.viz.rendering",
    "VizRequest": "deblur_cli.viz.request",
    "visualize": "deblur_cli.viz.pipeline",
    "write_maps": "deblur_cli.viz.rendering",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
