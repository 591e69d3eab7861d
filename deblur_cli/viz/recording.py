"""Recording the network's internal maps (Fig. 6-7) from an ordinary forward pass.

:class:`MapSelection` says which content-aware module's maps to show. A :class:`MapRecorder`
attaches forward hooks, for the duration of a ``with`` block, to the modules of a SAPHN that
produce maps (``SAPHN.named_map_modules``) and keeps the maps it is asked for, as float32
arrays of the whole image at quarter resolution, ``(B, C, ceil(H/4), ceil(W/4))``::

    recorder = map_recorder(selection, model.config.blocks)
    with torch.inference_mode(), recorder.attach(model):
        y = model(x)            # the ordinary forward; the hooks only read
    recorder["level1.decoder.block2.pdf.offsets"]

Keys are ``level{1,2,3}.{encoder,decoder}.block{i}.{fusion, sa.m1, sa.q, ca.m1, ca.q,
pdf.kernels, pdf.offsets}`` and ``level{1,2}.cla.{m1,q}``; offsets are in quarter-resolution
pixels, ``(dy, dx)`` per tap. Only the chosen modules get hooks, and each map is copied to a
numpy array as soon as its module has run, so the model's own tensors are freed level by level.

Nothing here imports torch at module level (it comes with the model).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from deblur_cli.errors import DeblurError

#: Number of levels of the hierarchy.
LEVELS = 3


@dataclass(frozen=True)
class MapSelection:
    """Which maps of which content-aware module to render.

    Attributes:
        fusion: ``M_fus``.
        attention: ``M1`` and ``q_maps`` of the attention maps ``q_i``.
        offsets: direction wheel and horizontal spread (and shift if ``extra``).
        kernels: kernel variance.
        level: 1 (finest, the output's level) to 3.
        block: 1-based block index; ``None`` = the last block.
        decoder: decoder (True) or encoder block.
        q_maps: how many ``q_i`` to show, most structured (highest spatial variance) first;
            ``None`` = all ``C2``.
        extra: also cross-attention (``ca_*``), cross-level attention (``cla_*``) and the
            mean horizontal offset.
    """

    fusion: bool = True
    attention: bool = True
    offsets: bool = True
    kernels: bool = True
    level: int = 1
    block: int | None = None
    decoder: bool = True
    q_maps: int | None = 1
    extra: bool = False

    @classmethod
    def from_flags(
        cls,
        *,
        fusion: bool = False,
        attention: bool = False,
        offsets: bool = False,
        kernels: bool = False,
        all_maps: bool = False,
        level: int = 1,
        block: int | None = None,
        decoder: bool = True,
    ) -> MapSelection:
        """The CLI's flags: none of the four groups = the default set (all four groups, one
        ``q_i``); some = only those; ``all_maps`` = every map, every ``q_i``, cross-attention."""
        where = dict(level=level, block=block, decoder=decoder)
        if all_maps:
            return cls(q_maps=None, extra=True, **where)
        if not (fusion or attention or offsets or kernels):
            return cls(**where)
        return cls(fusion=fusion, attention=attention, offsets=offsets, kernels=kernels, **where)

    @property
    def part(self) -> str:
        """``"decoder"`` or ``"encoder"``."""
        return "decoder" if self.decoder else "encoder"

    def prefix(self, blocks: int) -> str:
        """Key prefix of the chosen block, e.g. ``"level1.decoder.block2."``."""
        return f"level{self.level}.{self.part}.block{self.block or blocks}."

    def describe(self, blocks: int | None = None) -> str:
        """E.g. ``"level 1, decoder block 2"``."""
        b = self.block or blocks
        return f"level {self.level}, {self.part} block {b if b is not None else 'last'}"


def check_selection(selection: MapSelection, blocks: int) -> MapSelection:
    """Validate ``level``/``block`` against a model with ``blocks`` blocks per encoder/decoder.

    Returns:
        the selection with ``block`` filled in (the last block if it was ``None``).

    Raises:
        DeblurError: level outside 1-3 or block outside 1-``blocks``.
    """
    if not 1 <= selection.level <= LEVELS:
        raise DeblurError(f"--level must be 1 (finest) to {LEVELS}, got {selection.level}")
    block = selection.block if selection.block is not None else blocks
    if not 1 <= block <= blocks:
        raise DeblurError(
            f"--block must be 1 to {blocks} (this model has {blocks} block(s) per {selection.part}), got {block}"
        )
    return replace(selection, block=block)


def blocks_in(keys: Iterable[str], level: int, part: str) -> int:
    """Highest block index among the map ``keys`` for ``level``/``part`` (0 if none)."""
    pat = re.compile(rf"^level{level}\.{part}\.block(\d+)\.")
    return max((int(m.group(1)) for k in keys if (m := pat.match(k))), default=0)


def as_float_array(value: Any) -> np.ndarray:
    """A torch tensor (any device/dtype) or array -> float32 numpy."""
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


class MapRecorder(dict):  # type: ignore[type-arg]
    """Map key -> float32 array ``(B, C, ceil(H/4), ceil(W/4))``, filled by :meth:`attach`.

    Args:
        keep: predicate on the key (e.g. ``"level1.decoder.block2.fusion"``); ``None`` keeps
            every map.
    """

    def __init__(self, keep: Callable[[str], bool] | None = None) -> None:
        super().__init__()
        self._keep = keep if keep is not None else (lambda key: True)

    def keeps(self, key: str) -> bool:
        """Whether the map ``key`` is recorded."""
        return self._keep(key)

    @contextmanager
    def attach(self, model: Any) -> Iterator[MapRecorder]:
        """Within the block, every forward pass of ``model`` (a SAPHN, any batch size) records
        the kept maps into this dict (a later pass replaces a key's array). The hooks return
        nothing, so the output is what it is without them; they are removed on leaving.

        Raises:
            TypeError: ``model`` has no maps (not a SAPHN).
        """
        from deblur_cli.models.saphn import stitch_patches

        if not hasattr(model, "named_map_modules"):
            raise TypeError(f"{type(model).__name__} has no internal maps to record (not a SAPHN)")
        size: list[int] = []

        def input_size(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = args[0] if args else kwargs["x"]
            size[:] = [int(x.shape[-2]), int(x.shape[-1])]

        def recorder(prefix: str, level: int) -> Callable[..., None]:
            def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
                for name, value in module.intermediates(*args, **kwargs).items():
                    if self._keep(prefix + name):
                        self[prefix + name] = as_float_array(stitch_patches(value, level, *size))

            return hook

        handles = [model.register_forward_pre_hook(input_size, with_kwargs=True)]
        try:
            for prefix, level, module in model.named_map_modules():
                if any(self._keep(prefix + name) for name in module.map_names):
                    handles.append(module.register_forward_hook(recorder(prefix, level), with_kwargs=True))
            yield self
        finally:
            for handle in handles:
                handle.remove()


def map_recorder(selection: MapSelection, blocks: int) -> MapRecorder:
    """A :class:`MapRecorder` for ``selection`` (the chosen block, plus the level's
    cross-level attention when ``selection.extra``).

    Raises:
        DeblurError: the level or block is not in a model with ``blocks`` blocks.
    """
    sel = check_selection(selection, blocks)
    prefixes = [sel.prefix(blocks)]
    if sel.extra:
        prefixes.append(f"level{sel.level}.cla.")
    return MapRecorder(lambda key: key.startswith(tuple(prefixes)))


def collect_maps(
    model: Any, rgb: np.ndarray, selection: MapSelection, device: Any = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Deblur one image with ``model`` and record the selected maps in the same pass.

    Args:
        model: an eval-mode SAPHN (``torch.nn.Module`` with a ``config``).
        rgb: ``(3, H, W)`` float32 RGB in ``[0, 1]``.
        selection: which block's maps (validated against ``model.config.blocks``).
        device: where to run (default: the model's device).

    Returns:
        ``(output, maps)``: the deblurred ``(3, H, W)`` float32 in ``[0, 1]`` and the recorded
        maps, ``(1, C, ceil(H/4), ceil(W/4))`` float32 each.
    """
    import torch

    recorder = map_recorder(selection, int(model.config.blocks))
    if device is None:
        device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))[None].to(device)
    with torch.inference_mode(), recorder.attach(model):
        y = model(x)
    out = np.clip(y[0].float().cpu().numpy(), 0.0, 1.0)
    return out, dict(recorder)
