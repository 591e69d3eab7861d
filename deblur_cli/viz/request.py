"""A request to write the network's maps beside each deblurred result (``--viz DIR``).

The inference pipeline holds a :class:`VizRequest` and calls only its two methods,
:meth:`~VizRequest.recorder` before the forward pass and :meth:`~VizRequest.write` after it,
so inference never imports the visualisation code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deblur_cli.errors import DeblurError


@dataclass(frozen=True)
class VizRequest:
    """Write the network's internal maps next to each result, from the same forward pass
    (``deblur image/folder --viz DIR``).

    Attributes:
        selection: a :class:`deblur_cli.viz.recording.MapSelection`.
        out_dir: folder for the map files; with ``mirror_from``, the root of a mirrored tree.
        mirror_from: output root of a folder run: the maps of ``OUT/a/b.png`` go to
            ``out_dir/a/``.
        raw: also write ``.npy`` arrays.
        overwrite: replace existing map files.
    """

    selection: Any
    out_dir: Path
    mirror_from: Path | None = None
    raw: bool = False
    overwrite: bool = False

    def folder_for(self, dst: Path) -> Path:
        """Where the maps of the result ``dst`` go."""
        if self.mirror_from is None:
            return self.out_dir
        return self.out_dir / dst.parent.relative_to(self.mirror_from)

    def recorder(self, config: Any | None) -> Callable[[], dict]:
        """A factory of map recorders for a model of this ``SAPHNConfig`` (checked against it).

        ``config`` is ``None`` when the backend holds no torch SAPHN model (e.g. ONNX Runtime),
        which has no maps to record: a one-line error.
        """
        from deblur_cli.viz.recording import check_selection, map_recorder

        if config is None:
            raise DeblurError("--viz needs the torch backend and a SAPHN model (the maps come from the torch model)")
        blocks = int(config.blocks)
        check_selection(self.selection, blocks)
        return lambda: map_recorder(self.selection, blocks)

    def write(
        self, maps: tuple[dict, int], image: np.ndarray, out: np.ndarray, src: Path, dst: Path, model_name: str
    ) -> list[Path]:
        """Render the maps recorded for one image and write them as ``<dst stem>.<map>.png``.

        Args:
            maps: the recorder's dict and this image's index in its batch.
            image, out: the input and the deblurred output, ``(H, W[, C])`` in their own dtype.
            src, dst: input and output paths (the caption names ``src``; files go beside ``dst``).
            model_name: for the caption (a weights file is named by its file name, so that the
                caption does not depend on the folder it was given from).
        """
        from deblur_cli.viz.drawing import as_rgb8
        from deblur_cli.viz.rendering import render_maps, write_maps

        rec, index = maps
        rendered = render_maps(rec, as_rgb8(image), as_rgb8(out), self.selection, index=index,
                               caption=f"{src.name} - {_label(model_name)}")  # fmt: skip
        return write_maps(rendered, self.folder_for(dst), dst.stem, raw=self.raw, overwrite=self.overwrite)


def _label(model_name: str) -> str:
    """A weights file's name without its folder; registry names and URIs as they are."""
    return os.path.basename(model_name) if os.path.isfile(model_name) else model_name
