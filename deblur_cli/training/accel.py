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
    """Time of training steps and of the part spent waiting for data.

    On CUDA the host runs ahead of the GPU, so host timers would count GPU work as "data" or
    the other way round. There the meter records CUDA events on the stream instead (no
    synchronisation): a step runs from its start event to its end event on the GPU's own
    timeline, and the data wait is the time from the start event to the event after the batch
    is ready; a GPU that idles because the host has not made the batch yet counts as waiting.
    Events are read (after one synchronisation) only when a figure is asked for.

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
        self._pending: list[tuple] = []
        self._marks: list = []

    def _mark(self) -> object:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self) -> None:
        """At the start of a step, before asking for its batch."""
        self._marks = [self._mark()]

    @contextlib.contextmanager
    def data(self) -> Iterator[None]:
        """Around fetching (or making) the step's batch and moving it to the device."""
        yield
        self._marks.append(self._mark())

    def end(self, batch: int) -> None:
        """After the optimizer step."""
        self._marks.append(self._mark())
        self.steps += 1
        if self.steps > self.skip and len(self._marks) == 3:
            self._pending.append((*self._marks, batch))

    def _flush(self) -> None:
        if not self._pending:
            return
        if self.cuda:
            self._pending[-1][2].synchronize()
        for t0, t1, t2, batch in self._pending:
            if self.cuda:
                data, total = t0.elapsed_time(t1) / 1000.0, t0.elapsed_time(t2) / 1000.0
            else:
                data, total = t1 - t0, t2 - t0
            self.counted += 1
            self.data_s += data
            self.step_s += total
            self.samples += batch
        self._pending.clear()

    @property
    def data_share(self) -> float:
        """Share of counted step time spent waiting for data (0-1)."""
        self._flush()
        return self.data_s / self.step_s if self.step_s > 0 else 0.0

    @property
    def samples_per_s(self) -> float:
        """Samples per second of counted step time."""
        self._flush()
        return self.samples / self.step_s if self.step_s > 0 else 0.0

    @property
    def seconds(self) -> float:
        """Counted step time in seconds."""
        self._flush()
        return self.step_s


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


class UtilisationSampler:
    """Samples the GPU's utilisation (the share of time a kernel ran, from NVML through
    ``torch.cuda.utilization``) once a second in a thread, while the ``with`` block runs.

    ``mean`` is ``None`` where NVML cannot be read (no ``pynvml``, no GPU)."""

    def __init__(self, device: torch.device, every_s: float = 1.0) -> None:
        import threading

        self.device, self.every_s = device, every_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.samples.append(float(torch.cuda.utilization(self.device)))
            except Exception:  # noqa: BLE001 - NVML missing or unreadable: no figure
                return

    def __enter__(self) -> UtilisationSampler:  # noqa: PYI034 - Python 3.10 has no typing.Self
        if self.device.type == "cuda":
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    @property
    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None
