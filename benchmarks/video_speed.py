"""Speed and memory of ``deblur video`` at 1280x720.

1. **Speed** (``--frames N``, default 12): a synthetic 720p clip (a textured scene panning, 12 px of
   linear motion blur at 30 degrees, x264 CRF 18, 25 fps) run through
   :func:`deblur_cli.video.deblur_video` with the default model, gate off and gate auto; and, for the
   overhead, the same clip only decoded to RGB, only encoded from RGB (x264 CRF 18, the default), and
   its first frame through the network alone (``Deblurrer.deblur_batch``, the baseline: the machine
   is shared, so only figures of one run compare). Prints frames/s and the decode and encode share.
2. **Memory** (``--memory 10,400``): each length runs in a fresh process; printed are the process's
   peak resident set (``ru_maxrss``) and the largest resident set seen in the first and in the second
   half of the clip (read after every batch). A pipeline that held the clip would grow with its length;
   the bounded queues keep it flat. ``--memory-models tiny`` uses ``saphn-tiny`` (random weights, the
   same pipeline, a fraction of the default model's time per frame) to keep long runs short;
   ``--size`` sets the frame size.

Use ``--clip FILE`` to time a real clip instead of the synthetic one (any size).

Usage::

    python -m benchmarks.video_speed                     # speed, 12 frames
    python -m benchmarks.video_speed --frames 0 --memory 10 --memory-models default
    python -m benchmarks.video_speed --frames 0 --memory 400 --memory-models tiny --size 640x360
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

W, H, RATE = 1280, 720, 25


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """``(height, width, 3)`` float32 in [0, 1]: random anti-aliased discs on gray."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 0.5, np.float32)
    for _ in range(height * width // 2000):
        c = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(img, c, int(rng.integers(3, 40)), tuple(float(v) for v in rng.random(3)), -1, lineType=cv2.LINE_AA)
    return img


def make_clip(path: Path, frames: int, blur: float = 12.0, angle: float = 30.0) -> None:
    """A 720p clip panning over a texture, each frame blurred by ``blur`` px at ``angle`` degrees (x264 CRF 18)."""
    import av
    import cv2

    from deblur_cli.data.synthetic import linear_psf

    scene = texture(H, W + 4 * frames)
    psf = linear_psf(blur, angle)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=RATE, options={"crf": "18", "preset": "veryfast"})
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        for i in range(frames):
            img = cv2.filter2D(scene[:, 4 * i : 4 * i + W], -1, psf, borderType=cv2.BORDER_REFLECT)
            f = av.VideoFrame.from_ndarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8), format="rgb24")
            f.pts = i
            for p in v.encode(f.reformat(format="yuv420p")):
                out.mux(p)
        for p in v.encode():
            out.mux(p)


def decode_only(path: Path) -> tuple[int, float, list[np.ndarray]]:
    """Decode every frame to RGB as the pipeline does: ``(frames, seconds, the frames)``."""
    from deblur_cli.video.streams import describe, frame_to_rgb, open_input

    start = time.perf_counter()
    frames = []
    with open_input(path) as c:
        v = c.streams.video[0]
        v.thread_type = "AUTO"
        info = None
        for f in c.decode(v):
            info = info or describe(v, f)
            frames.append(frame_to_rgb(f, info))
    return len(frames), time.perf_counter() - start, frames


def encode_only(path: Path, frames: list[np.ndarray], out: Path) -> float:
    """Encode RGB frames as the pipeline does (default codec and CRF): seconds."""
    import av

    from deblur_cli.video.encoding import CODECS, encoder_options
    from deblur_cli.video.streams import ColorTags, VideoInfo, rgb_to_frame

    h, w = frames[0].shape[:2]
    info = VideoInfo(w, h, "yuv420p", 8, (1, 1), Fraction(1, RATE), Fraction(RATE), len(frames), None, 0, None,
                     ColorTags())  # fmt: skip
    start = time.perf_counter()
    with av.open(str(out), "w") as c:
        v = c.add_stream(CODECS["h264"].encoder, rate=RATE, options=encoder_options("h264", CODECS["h264"].crf))
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        for i, rgb in enumerate(frames):
            f = rgb_to_frame(rgb, "yuv420p", info)
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
    return time.perf_counter() - start


def speed(clip: Path, work: Path, threads: int) -> None:
    import torch

    from deblur_cli.gate.meter import BlurMeter
    from deblur_cli.inference import Deblurrer
    from deblur_cli.video import deblur_video

    torch.set_num_threads(threads)
    n, t_dec, frames = decode_only(clip)
    t_enc = encode_only(clip, frames, work / "encoded.mp4")
    h, w = frames[0].shape[:2]
    meter = BlurMeter()
    x = frames[0].astype(np.float32) / 255
    meter.estimate(x)
    t0 = time.perf_counter()
    for _ in range(3):
        meter.estimate(x)
    t_meter = (time.perf_counter() - t0) / 3
    del frames
    print(f"clip: {clip.name}, {n} frames of {w}x{h}; torch threads {threads}")
    print(f"decode only: {t_dec:6.2f} s ({n / t_dec:7.1f} fps)   encode only (h264 CRF 18): {t_enc:6.2f} s "
          f"({n / t_enc:6.1f} fps)   blur meter: {t_meter:.3f} s per measured frame")  # fmt: skip
    d = Deblurrer(device="cpu")
    d.deblur_batch([x], 1)  # warm up
    t0 = time.perf_counter()
    d.deblur_batch([x], 1)
    t_net = time.perf_counter() - t0
    print(f"network alone (Deblurrer.deblur_batch, one frame): {t_net:.2f} s")
    for gate in (None, (4.0, 6.0)):
        d = Deblurrer(device="cpu", gate=gate)
        out = work / f"out_{'auto' if gate else 'off'}.mp4"
        r = deblur_video(d, clip, out, overwrite=True)
        share = (t_dec + t_enc) / r.seconds
        print(f"deblur video, gate {'auto' if gate else 'off '}: {r.seconds:7.1f} s, {r.fps:.3f} fps "
              f"({r.seconds / r.frames:.2f} s/frame; {d.device_description}); stage busy time: decode "
              f"{r.decode_seconds:.1f} s, deblur {r.deblur_seconds:.1f} s, encode {r.encode_seconds:.1f} s; decode + "
              f"encode alone = {share:.1%} of the wall time; deblurred {r.deblurred}, blended {r.blended}, "
              f"untouched {r.untouched}")  # fmt: skip


def child(clip: Path, model: str, out: Path, threads: int) -> None:
    """One memory run: print JSON with frames, seconds, peak RSS and the largest RSS of each half."""
    import torch

    from deblur_cli.inference import Deblurrer
    from deblur_cli.models import create_model
    from deblur_cli.video import deblur_video

    def rss_mib() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    torch.set_num_threads(threads)
    d = Deblurrer(create_model("saphn-tiny").eval(), device="cpu") if model == "tiny" else Deblurrer(device="cpu")
    trace: list[tuple[int, float]] = []
    r = deblur_video(d, clip, out, overwrite=True, progress=lambda p: trace.append((p.frames, rss_mib())))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    half = r.frames / 2
    first = max((m for n, m in trace if n <= half), default=0.0)
    second = max((m for n, m in trace if n > half), default=0.0)
    print(json.dumps({"frames": r.frames, "seconds": r.seconds, "peak_mib": peak, "first": first, "second": second}))


def memory(lengths: list[int], models: list[str], work: Path, threads: int) -> None:
    print(f"resident memory of a fresh process running deblur_video on a {W}x{H} clip (torch threads {threads})")
    for n in lengths:
        clip = work / f"long_{n}.mp4"
        if not clip.exists():
            make_clip(clip, n)
        for model in models:
            cmd = [sys.executable, "-m", "benchmarks.video_speed", "--child", str(clip), model, str(work / "m.mp4"),
                   str(threads), "--size", f"{W}x{H}"]  # fmt: skip
            res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
            got = json.loads(res.stdout.strip().splitlines()[-1])
            name = "default model" if model == "default" else "saphn-tiny"
            print(f"{n:5d} frames ({n / RATE:5.1f} s of video), {name:13s}: peak {got['peak_mib']:6.0f} MiB; largest "
                  f"in the first half {got['first']:6.0f} MiB, in the second half {got['second']:6.0f} MiB; "
                  f"{got['seconds']:6.1f} s ({got['frames'] / got['seconds']:.2f} fps)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    global W, H  # --size: the clips' frame size
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=12, help="length of the speed clip (0: skip the speed run)")
    ap.add_argument("--clip", type=Path, help="time this clip instead of the synthetic one")
    ap.add_argument("--memory", default="", help="comma-separated clip lengths for the memory runs")
    ap.add_argument("--memory-models", default="default,tiny", help="models of the memory runs: default, tiny")
    ap.add_argument("--size", default=f"{W}x{H}", help="frame size WxH of the synthetic clips")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    W, H = (int(v) for v in args.size.lower().split("x"))
    if args.child:
        child(Path(args.child[0]), args.child[1], Path(args.child[2]), int(args.child[3]))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.frames:
            clip = args.clip
            if clip is None:
                clip = work / "clip.mp4"
                make_clip(clip, args.frames)
            speed(clip, work, args.threads)
        if args.memory:
            memory([int(v) for v in args.memory.split(",")], args.memory_models.split(","), work, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
