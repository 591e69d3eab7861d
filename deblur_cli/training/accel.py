"""How a training run uses its device: precision, memory layout, compilation, where the
training pairs are made, and the timing that says whether the device waits for data.

None of this changes what a run learns (it is not part of :class:`~deblur_cli.training.trainer.TrainConfig`,
so a run started on a CPU can be resumed on a GPU and the other way round):

* on CUDA, TF32 matrix products and ``bfloat16`` autocast (bf16 keeps float32's range, so no
  loss scaling is needed; the loss and the optimizer stay float32);
* channels-last and ``torch.compile`` only where they were measured faster (``"auto"``:
  channels-last on the CPU, where it measured faster for saphn-s, nothing else); a model that
  fails to compile falls back to eager with one log line;
* synthetic pairs made on the device in batches (:class:`~deblur_cli.data.gpu_pairs.TorchSyntheticPairs`)
  on CUDA, by the numpy/OpenCV reference on the CPU, optionally in ``workers`` threads.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

#: Choices of :attr:`Accel.amp`, :attr:`Accel.compile`, :attr:`Accel.channels_last`, :attr:`Accel.synthesis`.
AMP = ("auto", "bf16", "off")
SWITCH = ("auto", "on", "off")
SYNTHESIS = ("auto", "torch", "numpy")


@dataclass
class Accel:
    """Device settings of a training call.

    Attributes:
        amp: ``"bf16"`` autocast, ``"off"``, or ``"auto"`` (bf16 on CUDA only).
        compile: ``torch.compile`` the model: ``"on"``, ``"off"``; ``"auto"`` is off (turn it
            on where a probe measured it faster; see ``tools/accelerator/probe.py``).
        channels_last: ``"on"``, ``"off"``, ``"auto"`` (on for the CPU only).
        synthesis: where synthetic pairs are made: ``"torch"`` (batched, on the device),
            ``"numpy"`` (the reference, on the CPU), ``"auto"`` (torch on CUDA).
        workers: threads that prepare numpy batches ahead of the training step (0: in line).
    """

    amp: str = "auto"
    compile: str = "auto"
    channels_last: str = "auto"
    synthesis: str = "auto"
    workers: int = 0

    def __post_init__(self) -> None:
        for name, allowed in (("amp", AMP), ("compile", SWITCH), ("channels_last", SWITCH), ("synthesis", SYNTHESIS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} is one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if self.workers < 0:
            raise ValueError("workers must be 0 or more")

    def resolved(self, device: torch.device) -> dict[str, object]:
        """The concrete choices on ``device`` (``"auto"`` decided)."""
        cuda = device.type == "cuda"
        return {
            "amp": ("bf16" if cuda else "off") if self.amp == "auto" else self.amp,
            "compile": self.compile == "on",
            "channels_last": (device.type == "cpu") if self.channels_last == "auto" else self.channels_last == "on",
            "synthesis": ("torch" if cuda else "numpy") if self.synthesis == "auto" else self.synthesis,
            "workers": self.workers,
        }


def setup_device(device: torch.device) -> None:
    """Process-wide settings for training on ``device``: TF32 matrix products on CUDA (about
    8x the float32 rate on tensor cores, with float32's range; the paper's network trains in
    float32 precision to well within that)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed crop size: pick the fastest conv algorithm once


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bfloat16 when ``amp == "bf16"``, else a no-op context."""
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compiled(model: nn.Module, log: Callable[[str], None]) -> Callable:
    """``torch.compile(model)``, or ``model`` itself if compiling is not possible here.

    Compilation happens lazily at the first call; :class:`CompileFallback` catches a failure
    there."""
    try:
        return torch.compile(model)
    except Exception as exc:  # noqa: BLE001 - any failure means: run eager
        log(f"torch.compile unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); running eager")
        return model


class CompileFallback:
    """Calls the compiled model; on its first failure logs one line and uses the eager model from then on."""

    def __init__(self, eager: nn.Module, fast: Callable, log: Callable[[str], None]) -> None:
        self.eager, self.fast, self.log = eager, fast, log
        self.failed = fast is eager

    def __call__(self, *args: object, **kwargs: object) -> torch.Tensor:
        if not self.failed:
            try:
                return self.fast(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - e.g. no C compiler, an unsupported op
                self.failed = True
                first = str(exc).splitlines()[0][:160] if str(exc) else ""
                self.log(f"torch.compile failed ({type(exc).__name__}: {first}); continuing eager")
        return self.eager(*args, **kwargs)


class StepMeter:
    """Wall time of training steps and of the part spent waiting for data.

    On CUDA the host runs ahead of the GPU, so host timers alone would call GPU work "data":
    the device is synchronised at the boundaries of the data wait (two cheap syncs a step),
    which makes the split exact at a small cost in overlap.

    Args:
        device: the training device.
        skip: steps not counted at the start (cuDNN autotuning, compilation).
    """

    def __init__(self, device: torch.device, skip: int = 0) -> None:
        self.cuda = device.type == "cuda"
        self.skip = skip
        self.steps = 0
        self.counted = 0
        self.data_s = 0.0
        self.step_s = 0.0
        self.samples = 0
        self._t0 = 0.0

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self) -> None:
        """At the start of a step, before asking for its batch."""
        self._t0 = self._now()

    @contextlib.contextmanager
    def data(self) -> Iterator[None]:
        """Around fetching (or making) the step's batch."""
        t = self._now() if self.cuda else time.perf_counter()
        yield
        self._data = (self._now() if self.cuda else time.perf_counter()) - t

    def end(self, batch: int) -> None:
        """After the optimizer step."""
        total = self._now() - self._t0
        self.steps += 1
        if self.steps > self.skip:
            self.counted += 1
            self.step_s += total
            self.data_s += getattr(self, "_data", 0.0)
            self.samples += batch

    @property
    def data_share(self) -> float:
        """Share of counted step time spent waiting for data (0-1)."""
        return self.data_s / self.step_s if self.step_s > 0 else 0.0

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.step_s if self.step_s > 0 else 0.0


def train_flops_per_sample(model: nn.Module, crop: int, device: torch.device, amp: str = "off") -> float:
    """FLOPs of one training sample (forward and backward, all levels) at ``crop`` pixels,
    counted by ``torch.utils.flop_counter`` (convolutions and matrix products; the sampling in
    the filtering module is not counted, so achieved rates derived from this are a lower bound)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, crop, crop, device=device)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.train()
    with counter, autocast(device, amp):
        levels: list[torch.Tensor] = []
        model(x, levels=levels)
        sum(level.float().mean() for level in levels).backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return float(counter.get_total_flops())


def gpu_memory(device: torch.device) -> dict[str, float]:
    """Peak allocated and total memory of a CUDA device in GiB (empty on other devices)."""
    if device.type != "cuda":
        return {}
    props = torch.cuda.get_device_properties(device)
    return {
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved(device) / 2**30, 2),
        "total_gib": round(props.total_memory / 2**30, 2),
        "name": props.name,  # type: ignore[dict-item]
    }
