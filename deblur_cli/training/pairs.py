"""Where a training run's batches come from: real pairs, synthetic pairs made on the CPU or on
the training device, optionally prepared ahead by worker threads, and their random state.

Every source has ``batch(n) -> (blurred, sharp)`` (``(n, 3, crop, crop)`` float32, numpy on the
CPU or tensors on the device) and a random state that a checkpoint saves, so that a resumed run
draws the same batches as one that never stopped.
"""

from __future__ import annotations

import copy
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deblur_cli.data.datasets import SyntheticPairs, find_pairs, read_rgb
from deblur_cli.data.gpu_pairs import TorchSyntheticPairs
from deblur_cli.data.synthetic import BlurSettings


class GoProPairs:
    """Random aligned crops from real blurred/sharp pairs (GoPro training layout)."""

    def __init__(self, data: Path, crop: int, seed: int = 0) -> None:
        self.pairs = find_pairs(Path(data) / "train" if (Path(data) / "train").is_dir() else Path(data))
        self.crop = crop
        self.rng = np.random.default_rng(seed)
        self._cache: dict[Path, np.ndarray] = {}

    def _img(self, p: Path) -> np.ndarray:
        if p not in self._cache:
            if len(self._cache) > 64:
                self._cache.pop(next(iter(self._cache)))
            self._cache[p] = read_rgb(p)
        return self._cache[p]

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        bl, sh = [], []
        for _ in range(n):
            pair = self.pairs[self.rng.integers(len(self.pairs))]
            b, s = self._img(pair.blur), self._img(pair.sharp)
            h, w = b.shape[:2]
            c = min(self.crop, h, w)
            y, x = int(self.rng.integers(0, h - c + 1)), int(self.rng.integers(0, w - c + 1))
            flip = self.rng.random() < 0.5
            for src, dst in ((b, bl), (s, sh)):
                crop = src[y : y + c, x : x + c]
                dst.append((crop[:, ::-1] if flip else crop).transpose(2, 0, 1))
        return np.ascontiguousarray(np.stack(bl)), np.ascontiguousarray(np.stack(sh))


def make_source(
    synthetic: Path | None, data: Path | None, crop: int, settings: BlurSettings, seed: int,
    device: torch.device, synthesis: str = "numpy",
) -> Any:  # fmt: skip
    """The training pairs: ``synthetic`` photos (made by torch on ``device`` when ``synthesis``
    is ``"torch"``, else by the numpy reference) or ``data`` (GoPro-layout real pairs)."""
    if synthetic is not None:
        if synthesis == "torch":
            return TorchSyntheticPairs(Path(synthetic), crop, settings, seed=seed, device=device)
        return SyntheticPairs(Path(synthetic), crop, settings, seed=seed)
    if data is not None:
        return GoProPairs(Path(data), crop, seed=seed)
    raise ValueError("give synthetic= (sharp photos) or data= (GoPro layout)")


def data_state(source: Any) -> Any:
    """JSON-able random state of a source (numpy generator state, or the torch sampler's)."""
    if hasattr(source, "rng_state"):
        return source.rng_state()
    return source.rng.bit_generator.state


def set_data_state(source: Any, state: Any) -> None:
    """Restore :func:`data_state`."""
    if hasattr(source, "set_rng_state"):
        source.set_rng_state(state)
    else:
        source.rng.bit_generator.state = state


class Prefetcher:
    """``workers`` threads preparing batches of a CPU source ahead of the training step.

    Worker ``i`` owns a shallow copy of the source (photos shared, its own generator seeded
    from ``(seed, i)``) and makes batches ``i, i + workers, ...``; they are taken in that
    round-robin order, so the sequence of batches does not depend on thread timing, and the
    state (each worker's generator after its last batch taken) resumes it exactly. OpenCV and
    most of numpy release the GIL, so threads run the degradations in parallel.

    Args:
        source: a CPU source (``SyntheticPairs`` or :class:`GoProPairs`).
        batch: samples per batch.
        workers: threads (>= 1).
        seed: base seed of the workers' generators.
        state: a :meth:`state` to resume from.
    """

    def __init__(self, source: Any, batch: int, workers: int, seed: int, state: Any = None) -> None:
        self.batch_size, self.workers = batch, workers
        self.clones = []
        for i in range(workers):
            clone = copy.copy(source)
            clone.rng = np.random.default_rng([seed, i])
            if hasattr(clone, "_cache"):
                clone._cache = {}
            self.clones.append(clone)
        self._next = 0
        if state is not None and state.get("workers") == workers:
            for clone, st in zip(self.clones, state["rng"]):
                clone.rng.bit_generator.state = st
            self._next = int(state["next"])
        self._taken = [c.rng.bit_generator.state for c in self.clones]
        self._queues: list[queue.Queue] = [queue.Queue(maxsize=2) for _ in range(workers)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def _work(self, i: int) -> None:
        clone, q = self.clones[i], self._queues[i]
        while not self._stop.is_set():
            try:
                item = (clone.batch(self.batch_size), clone.rng.bit_generator.state, None)
            except Exception as exc:  # noqa: BLE001 - handed to the training thread
                item = (None, None, exc)
            while not self._stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The next batch in round-robin order (``n`` must be the batch size given)."""
        assert n == self.batch_size
        i = self._next
        pair, state, exc = self._queues[i].get()
        if exc is not None:
            raise exc
        self._taken[i] = state
        self._next = (i + 1) % self.workers
        return pair

    def state(self) -> dict:
        """Each worker's generator state after its last batch taken, and whose turn is next."""
        # Batches already made but not taken are made again on resume, from these states.
        return {"workers": self.workers, "rng": list(self._taken), "next": self._next}

    def close(self) -> None:
        """Stop the threads (batches in flight are dropped)."""
        self._stop.set()
        for q in self._queues:
            while not q.empty():
                q.get_nowait()
        for t in self._threads:
            t.join(timeout=5)
