"""``deblur bench``: how fast deblurring runs on this machine (the short version of ``benchmarks/``).

It deblurs a synthetic image through the same engine as ``deblur image`` (conversion, tiling,
backend), once cold and ``--runs`` times warm, and prints the median time, the throughput and the
process's peak memory. A registered *architecture* name (``saphn``, ``saphn-s``, ...) runs with
random weights, since speed does not depend on them (so the paper-width model can be timed before
its weights are published); a weights name (``saphn-s.synth``) or ``--weights`` loads real ones.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from deblur_cli.cli import options as opt
from deblur_cli.cli.app import app
from deblur_cli.errors import DeblurError


@dataclass
class BenchResult:
    """What :func:`run_benchmark` measured.

    Attributes:
        model: what ran (name, plus ``"random weights"`` for a bare architecture).
        device: the backend's description of the device that really ran.
        width, height: image size.
        tile: the engine's tile side for this size (0: whole image).
        load_s: building/loading the model (and, for ONNX, exporting it on first use).
        first_s: the first (cold) deblur.
        times: the warm runs, seconds each.
        peak_rss_mib: the process's peak resident memory, or ``None`` where unknown.
        peak_cuda_mib: peak CUDA memory allocated by torch, or ``None``.
    """

    model: str
    device: str
    width: int
    height: int
    tile: int
    load_s: float
    first_s: float
    times: list[float] = field(default_factory=list)
    peak_rss_mib: float | None = None
    peak_cuda_mib: float | None = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)

    @property
    def megapixels_per_s(self) -> float:
        return self.width * self.height / 1e6 / self.median_s


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> ``(1280, 720)``.

    Raises:
        DeblurError: not ``WxH`` with positive integers.
    """
    try:
        w, h = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise DeblurError(f"--size must look like 1280x720, got {text!r}") from None
    if w < 1 or h < 1:
        raise DeblurError(f"--size must be positive, got {text!r}")
    return w, h


def synthetic_image(width: int, height: int, seed: int = 0) -> Any:
    """A ``uint8`` ``(H, W, 3)`` RGB test image: gradients, edges and noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    stripes = (np.sin(xs * 40.0) > 0).astype(np.float32) * (ys < 0.5)
    rgb = np.stack([ys * xs, 0.3 + 0.4 * stripes + 0 * xs, 1.0 - xs + 0 * ys], axis=-1) * 200.0
    return np.clip(rgb + rng.integers(0, 55, (height, width, 3)), 0, 255).astype(np.uint8)


def random_weights_model(name: str) -> Any:
    """Architecture ``name`` with random weights; zero-initialised layers (decoder heads, the
    filtering module's meta-layer) get small random values so every path does real work.
    Deterministic (the same weights every time, so an ONNX export is cached once)."""
    import torch

    from deblur_cli.models import create_model, randomize_zero_layers

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return randomize_zero_layers(create_model(name), seed=0)


def peak_rss_mib() -> float | None:
    """This process's peak resident set size in MiB (``None`` without the ``resource`` module)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def run_benchmark(
    model: str | None = None,
    weights: str | None = None,
    device: str = "auto",
    backend: str = "torch",
    size: tuple[int, int] = (1280, 720),
    runs: int = 3,
    tile: int | None = None,
    fp16: bool = False,
    bf16: bool = False,
) -> BenchResult:
    """Time ``Deblurrer.deblur`` on a synthetic image: one cold run, then ``runs`` warm runs.

    Raises:
        DeblurError: as :class:`~deblur_cli.inference.deblurrer.Deblurrer` (unknown model, no CUDA, ...).
    """
    from deblur_cli.inference import Deblurrer
    from deblur_cli.models import list_variants

    if runs < 1:
        raise DeblurError(f"--runs must be at least 1, got {runs}")
    width, height = size
    start = time.perf_counter()
    if model in list_variants() and weights is None:
        net, label = random_weights_model(model), f"{model} (random weights)"
        deblurrer = Deblurrer(net, device=device, backend=backend, tile=tile, fp16=fp16, bf16=bf16)
    else:
        deblurrer = Deblurrer(model, weights=weights, device=device, backend=backend, tile=tile, fp16=fp16, bf16=bf16)
        label = str(deblurrer.model_info.get("name") or model or "default model")
    load_s = time.perf_counter() - start
    image = synthetic_image(width, height)
    used_tile = deblurrer.tile_for(height, width)
    cuda = _cuda_device(deblurrer)
    if cuda is not None:
        import torch

        torch.cuda.reset_peak_memory_stats(cuda)
    start = time.perf_counter()
    deblurrer.deblur(image)
    first_s = time.perf_counter() - start
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        deblurrer.deblur(image)
        times.append(time.perf_counter() - start)
    peak_cuda = None
    if cuda is not None:
        import torch

        peak_cuda = torch.cuda.max_memory_allocated(cuda) / (1 << 20)
    return BenchResult(
        model=label,
        device=deblurrer.device_description,
        width=width,
        height=height,
        tile=used_tile if used_tile and (used_tile < height or used_tile < width) else 0,
        load_s=load_s,
        first_s=first_s,
        times=times,
        peak_rss_mib=peak_rss_mib(),
        peak_cuda_mib=peak_cuda,
    )


def _cuda_device(deblurrer: Any) -> Any:
    dev = getattr(deblurrer.backend, "device", None)
    return dev if getattr(dev, "type", None) == "cuda" else None


def report(result: BenchResult) -> str:
    """The lines ``deblur bench`` prints."""
    r = result
    lines = [
        f"model      {r.model}",
        f"device     {r.device}",
        f"image      {r.width}x{r.height} ({r.width * r.height / 1e6:.2f} MP), "
        + (f"tiles of {r.tile} px" if r.tile else "whole image (no tiling)"),
        f"load       {r.load_s:.2f} s",
        f"first run  {r.first_s:.2f} s",
        (
            f"warm runs  {r.median_s:.2f} s median of {len(r.times)} (min {min(r.times):.2f} s), "
            f"{r.megapixels_per_s:.2f} MP/s"
        ),
    ]
    if r.peak_rss_mib is not None:
        lines.append(f"peak RSS   {r.peak_rss_mib:.0f} MiB")
    if r.peak_cuda_mib is not None:
        lines.append(f"peak CUDA  {r.peak_cuda_mib:.0f} MiB allocated by torch")
    return "\n".join(lines)


@app.command("bench")
def bench(
    model: opt.Model = None,
    weights: opt.Weights = None,
    device: opt.Device = "auto",
    backend: opt.Backend = opt.BackendName.torch,
    size: Annotated[
        str, typer.Option("--size", help="Synthetic image size, WIDTHxHEIGHT.", show_default=True)
    ] = "1280x720",
    runs: Annotated[int, typer.Option("--runs", "-n", min=1, help="Warm runs to time (after one cold run).")] = 3,
    tile: opt.Tile = None,
    fp16: opt.Fp16 = False,
    bf16: opt.Bf16 = False,
) -> None:
    """Time deblurring on this machine: a synthetic image through the same engine as `deblur image`.

    An architecture name (saphn, saphn-a, saphn-s) runs with random weights (speed does not depend
    on them); a weights name (e.g. saphn-s.synth) or --weights loads real ones. For the full
    benchmarks (every variant, DMPHN side by side, memory, scaling) see benchmarks/README.md.
    """
    result = run_benchmark(model, weights, device, backend.value, parse_size(size), runs, tile, fp16, bf16)
    typer.echo(report(result))
