"""``deblur video``: timing, audio, rotation and colour tags kept; frames as ``Deblurrer.deblur`` makes
them; the gate smoothed over time; safe output. Every clip is made here with PyAV, a few frames small."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from deblur_cli.cli.main import _register, main
from deblur_cli.errors import DeblurError
from deblur_cli.inference import Deblurrer
from deblur_cli.video import deblur_video
from deblur_cli.video.encoding import choose_pix_fmt
from deblur_cli.inference.media import plan_media
from deblur_cli.video.streams import ColorTags, VideoInfo
from deblur_cli.video.temporal import TemporalGate, flicker

_register()

BT709 = (1, 1, 1, 1)  # primaries, transfer, matrix, range (limited)


def _texture(seed: int, h: int, w: int) -> np.ndarray:
    """A sharp picture the blur meter can read: overlapping anti-aliased discs, float RGB in [0, 1]."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 0.5, np.float32)
    for _ in range(h * w // 120):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, c, int(rng.integers(3, 25)), tuple(float(v) for v in rng.random(3)), -1, lineType=cv2.LINE_AA)
    return img


def make_clip(path: Path, frames: list[np.ndarray] | int = 5, *, size=(67, 45), pts=None, rate=25, audio=True,
              rotation=90, tags=BT709, pix_fmt="yuv444p", codec="libx264", audio_codec="aac", crf=None) -> list[np.ndarray]:  # fmt: skip
    """Write a clip (lossless x264 unless ``crf``) and return its frames as given (uint8 or uint16 RGB)."""
    w, h = size
    if isinstance(frames, int):
        frames = [(np.clip(np.roll(_texture(0, h, w), 3 * i, axis=1), 0, 1) * 255).round().astype(np.uint8)
                  for i in range(frames)]  # fmt: skip
    out = av.open(str(path), "w")
    out.metadata["title"] = "A test clip"
    v = out.add_stream(codec, rate=rate, options={"qp": "0"} if crf is None else {"crf": str(crf)})
    v.width, v.height, v.pix_fmt = w, h, pix_fmt
    v.time_base = Fraction(1, rate * 4)  # finer than a frame, so that irregular pts can be written
    v.codec_context.time_base = v.time_base
    cc = v.codec_context
    cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = tags
    if rotation:
        v.set_display_rotation(rotation)
    a = None
    if audio:
        a = out.add_stream(audio_codec, rate=48000, layout="stereo")
    pts = pts or [4 * i for i in range(len(frames))]
    for img, p in zip(frames, pts, strict=True):
        f = av.VideoFrame.from_ndarray(img, format="rgb48le" if img.dtype == np.uint16 else "rgb24")
        matrix = {1: "ITU709", 5: "ITU601", 6: "ITU601"}.get(tags[2], "ITU601")
        f = f.reformat(format=pix_fmt, dst_colorspace=matrix, dst_color_range="MPEG" if tags[3] != 2 else "JPEG")
        f.pts = p
        for packet in v.encode(f):
            out.mux(packet)
    for packet in v.encode():
        out.mux(packet)
    if a is not None:
        n, t = 1024, 0
        seconds = (pts[-1] + 4) / (rate * 4)
        while t < seconds * 48000:
            s = (0.3 * np.sin(2 * np.pi * 440 * np.arange(t, t + n) / 48000)).astype(np.float32)
            fmt = "fltp" if audio_codec == "aac" else "s16"
            data = np.stack([s, s]) if fmt == "fltp" else (np.stack([s, s]).T.reshape(1, -1) * 32767).astype(np.int16)
            af = av.AudioFrame.from_ndarray(data, format=fmt, layout="stereo")
            af.sample_rate, af.pts = 48000, t
            for packet in a.encode(af):
                out.mux(packet)
            t += n
        for packet in a.encode():
            out.mux(packet)
    if path.suffix in (".mp4", ".mkv"):
        end = (pts[-1] + 4) * 10  # ms
        out.set_chapters([{"id": 1, "start": 0, "end": end // 2, "time_base": Fraction(1, 1000), "metadata": {"title": "One"}},
                          {"id": 2, "start": end // 2, "end": end, "time_base": Fraction(1, 1000), "metadata": {"title": "Two"}}])  # fmt: skip
    out.close()
    return frames


def decode(path: Path) -> dict:
    """Frames (as the pipeline converts them), timestamps in seconds, tags and the audio packets of a file."""
    from deblur_cli.video.streams import describe, frame_to_rgb

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames, times, durations, info, first = [], [], [], None, None
        for f in c.decode(v):
            if info is None:
                info, first = describe(v, f), f
            frames.append(frame_to_rgb(f, info))
            times.append(float(f.pts * f.time_base))
            durations.append(float(f.duration * f.time_base))
        tags = (first.color_primaries, first.color_trc, first.colorspace, first.color_range)
        duration = c.duration / av.time_base if c.duration else None
        title = c.metadata.get("title")
        chapters = [(float(ch["start"] * ch["time_base"]), ch["metadata"].get("title")) for ch in c.chapters()]
    with av.open(str(path)) as c:
        audio = [(float(p.pts * p.time_base), bytes(p)) for p in c.demux(audio=0) if p.dts is not None] if c.streams.audio else []  # fmt: skip
    return {"frames": frames, "times": times, "durations": durations, "rotation": first.rotation, "tags": tags,
            "pix_fmt": first.format.name, "audio": audio, "duration": duration, "codec": v.codec_context.name,
            "title": title, "chapters": chapters}  # fmt: skip


@pytest.fixture
def plain(tiny_weights):
    """The tiny model, no gate, untiled."""
    return Deblurrer("saphn-tiny", weights=tiny_weights, device="cpu", tile=0)


# --------------------------------------------------------------------------- what is kept


def test_keeps_timing_audio_rotation_and_tags(tmp_path, plain):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(src, 5)
    result = deblur_video(plain, src, dst)
    a, b = decode(src), decode(dst)
    assert result.frames == len(b["frames"]) == 5 and result.deblurred == 5
    assert b["times"] == pytest.approx(a["times"]) and b["durations"] == pytest.approx(a["durations"])
    assert b["duration"] == pytest.approx(a["duration"], abs=1e-3)
    assert b["audio"] == a["audio"] and len(a["audio"]) > 5  # the packets, byte for byte, at the same times
    assert b["rotation"] == a["rotation"] == 90
    assert b["tags"] == a["tags"] == BT709
    assert b["frames"][0].shape == (45, 67, 3) and b["pix_fmt"] == "yuv444p"  # odd size kept (4:4:4 in, 4:4:4 out)
    assert b["title"] == a["title"] == "A test clip"
    assert b["chapters"] == a["chapters"] == [(0.0, "One"), (0.1, "Two")]
    assert not any(p.name.endswith(".part") for p in tmp_path.iterdir())


def test_deblurrer_method_is_the_same_pipeline(tmp_path, plain):
    """``Deblurrer.deblur_video`` runs the same pipeline: the same frames, byte for byte (lossless output)."""
    src = tmp_path / "in.mp4"
    make_clip(src, 3)
    by_function = deblur_video(plain, src, tmp_path / "a.mkv", crf=0)
    by_method = plain.deblur_video(src, tmp_path / "b.mkv", crf=0)
    assert by_method.frames == by_function.frames == 3
    a, b = decode(tmp_path / "a.mkv"), decode(tmp_path / "b.mkv")
    assert all(np.array_equal(x, y) for x, y in zip(a["frames"], b["frames"]))


def test_matches_deblurrer_within_codec_loss(tmp_path, plain):
    """Output frames vs ``Deblurrer.deblur`` on the decoded input frames (the input is lossless): through a
    lossless encode (``--crf 0``) as close as the reference itself encoded the same way (4:2:0 chroma and
    YUV rounding are all that differ), and with the default CRF no further off than x264 puts the
    reference at the same settings."""
    src = tmp_path / "in.mkv"
    make_clip(src, 4, size=(64, 48), audio=False, rotation=0, pix_fmt="yuv420p")
    reference = [plain.deblur(f) for f in decode(src)["frames"]]

    def error(path):
        return np.mean([np.abs(o.astype(int) - r.astype(int)).mean() for o, r in
                        zip(decode(path)["frames"], reference, strict=True)])  # fmt: skip

    deblur_video(plain, src, tmp_path / "lossless.mkv", crf=0)
    direct0 = tmp_path / "direct0.mkv"
    make_clip(direct0, reference, size=(64, 48), audio=False, rotation=0, pix_fmt="yuv420p")
    assert error(tmp_path / "lossless.mkv") <= error(direct0) + 0.05
    deblur_video(plain, src, tmp_path / "lossy.mkv")  # default: x264 CRF 18
    direct18 = tmp_path / "direct18.mkv"
    make_clip(direct18, reference, size=(64, 48), audio=False, rotation=0, pix_fmt="yuv420p", crf=18)
    codec_loss = error(direct18)
    assert codec_loss > error(direct0)  # CRF 18 does lose something
    assert error(tmp_path / "lossy.mkv") <= codec_loss * 1.1 + 0.1


def test_variable_frame_rate_timestamps_kept(tmp_path, plain):
    src, dst = tmp_path / "vfr.mkv", tmp_path / "out.mp4"
    pts = [0, 4, 6, 14, 15, 30]  # irregular steps, in 1/100 s
    make_clip(src, 6, pts=pts, audio=False, rotation=0)
    deblur_video(plain, src, dst)
    a, b = decode(src), decode(dst)
    assert len(b["times"]) == 6
    assert np.diff(b["times"]) == pytest.approx(np.diff(a["times"]), abs=1e-3)
    assert np.diff(b["times"]) == pytest.approx(np.diff(pts) / 100, abs=1e-3)


def test_avi_with_b_frames_is_put_in_display_order(tmp_path, plain):
    """AVI stores decode times: with B-frames the decoded frames' timestamps jump back and forth."""
    src = tmp_path / "bf.avi"
    make_clip(src, 12, size=(64, 48), audio=False, rotation=0, tags=(2, 2, 2, 0), pix_fmt="yuv420p", crf=23)
    read = decode(src)["times"]
    assert sorted(read) != read
    notes: list[str] = []
    deblur_video(plain, src, tmp_path / "out.mp4", notify=notes.append)
    times = decode(tmp_path / "out.mp4")["times"]
    assert times == pytest.approx(sorted(read)) and len(times) == 12
    assert any("display order" in n for n in notes)


def test_webm_vp9_and_audio_choices(tmp_path, plain):
    src = tmp_path / "in.mp4"
    make_clip(src, 3, size=(64, 48), rotation=0)
    with pytest.raises(DeblurError, match="--audio opus"):
        deblur_video(plain, src, tmp_path / "out.webm")  # AAC cannot go into WebM
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))
    r = deblur_video(plain, src, tmp_path / "out.webm", audio="opus")
    b = decode(tmp_path / "out.webm")
    assert r.codec == "vp9" and b["codec"] == "vp9" and len(b["frames"]) == 3 and len(b["audio"]) > 0
    with av.open(str(tmp_path / "out.webm")) as c:
        assert c.streams.audio[0].codec_context.name == "opus"
    deblur_video(plain, src, tmp_path / "silent.mp4", audio="none")
    assert decode(tmp_path / "silent.mp4")["audio"] == []
    with pytest.raises(DeblurError, match="cannot hold h264"):
        deblur_video(plain, src, tmp_path / "x.webm", codec="h264", audio="none")


def test_pcm_audio_from_avi_needs_a_container_that_holds_it(tmp_path, plain):
    src = tmp_path / "in.avi"
    make_clip(src, 3, size=(64, 48), rotation=0, audio_codec="pcm_s16le", tags=(2, 2, 2, 0), pix_fmt="yuv420p")
    r = deblur_video(plain, src, tmp_path / "out.mkv")  # Matroska holds PCM: copied

    def samples(path):  # PCM packets are cut differently by each container: compare the samples
        return b"".join(data for _, data in decode(path)["audio"])

    assert samples(tmp_path / "out.mkv") == samples(src) and len(samples(src)) > 10000 and r.frames == 3
    with pytest.raises(DeblurError, match=r"audio \(pcm_s16le\) cannot go into a \.webm file; use --audio opus"):
        deblur_video(plain, src, tmp_path / "out.webm")


def test_ten_bits_kept_or_warned(tmp_path, plain):
    src = tmp_path / "deep.mkv"
    rng = np.random.default_rng(0)
    frames = [(_texture(i, 48, 64) * 65535 + rng.integers(0, 64, (48, 64, 3))).clip(0, 65535).astype(np.uint16)
              for i in range(2)]  # fmt: skip
    make_clip(src, frames, size=(64, 48), pix_fmt="yuv420p10le", audio=False, rotation=0)
    r = deblur_video(plain, src, tmp_path / "out.mp4")
    assert decode(tmp_path / "out.mp4")["pix_fmt"] == "yuv420p10le" and r.pix_fmt == "yuv420p10le"
    notes: list[str] = []
    r = deblur_video(plain, src, tmp_path / "out.webm", notify=notes.append)
    assert r.pix_fmt == "yuv420p" and any("8 bits" in n for n in notes) and r.warnings == notes


def test_choose_pix_fmt():
    def info(w, h, chroma, bits=8):
        return VideoInfo(w, h, "x", bits, chroma, Fraction(1, 25), Fraction(25), 1, 1.0, 0, None, ColorTags())

    x264 = ["yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le"]
    assert choose_pix_fmt("h264", info(64, 48, (1, 1)), x264) == ("yuv420p", None)
    assert choose_pix_fmt("h264", info(64, 48, (1, 0), 10), x264) == ("yuv422p10le", None)
    fmt, note = choose_pix_fmt("h264", info(65, 48, (1, 1)), x264)
    assert fmt == "yuv444p" and "odd frame size" in note
    assert choose_pix_fmt("vp9", info(65, 49, (1, 1)), ["yuv420p", "yuv444p"]) == (
        "yuv420p",
        None,
    )  # VP9 takes odd sizes
    fmt, note = choose_pix_fmt("av1", info(64, 48, (0, 0), 10), ["yuv420p", "yuv420p10le"])
    assert fmt == "yuv420p10le" and "4:2:0" in note


def test_subtitles_copied_where_the_container_holds_them(tmp_path, plain):
    (tmp_path / "s.srt").write_text("1\n00:00:00,000 --> 00:00:00,120\nBonjour\n\n")
    clip = tmp_path / "clip.mkv"
    make_clip(clip, 3, size=(64, 48), audio=False, rotation=0)
    src = tmp_path / "with_subs.mkv"  # the clip plus the subtitle stream, remuxed
    with av.open(str(clip)) as c, av.open(str(tmp_path / "s.srt")) as srt, av.open(str(src), "w") as out:
        v = out.add_stream_from_template(c.streams.video[0])
        t = out.add_stream_from_template(srt.streams.subtitles[0])
        t.metadata["language"] = "fra"
        for packet, stream in [*((p, t) for p in srt.demux()), *((p, v) for p in c.demux(video=0))]:
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)

    def subtitles(path):
        with av.open(str(path)) as c:
            if not c.streams.subtitles:
                return None
            lang = c.streams.subtitles[0].metadata.get("language")
            return lang, [(bytes(p), float(p.pts * p.time_base)) for p in c.demux(subtitles=0) if p.size]

    assert subtitles(src) == ("fra", [(b"Bonjour", 0.0)])
    deblur_video(plain, src, tmp_path / "out.mkv")
    assert subtitles(tmp_path / "out.mkv") == subtitles(src)
    r = deblur_video(plain, src, tmp_path / "out.mp4")
    assert subtitles(tmp_path / "out.mp4") is None and any("cannot hold it" in w for w in r.warnings)


# ---------------------------------------------------------------------------------- frames


def test_frames_folder_upright_and_exact(tmp_path, plain):
    from PIL import Image

    src = tmp_path / "in.mp4"
    make_clip(src, 3, rotation=90)
    r = deblur_video(plain, src, None, frames_dir=tmp_path / "frames")
    assert r.dst is None and not list(tmp_path.glob("in_deblurred*"))
    names = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert names == ["frame_000001.png", "frame_000002.png", "frame_000003.png"]
    first = np.asarray(Image.open(tmp_path / "frames" / names[0]))
    expected = plain.deblur(decode(src)["frames"][0])
    np.testing.assert_array_equal(first, np.rot90(expected))  # 90 degrees counter-clockwise: as a player shows it
    with pytest.raises(DeblurError, match="already holds"):
        deblur_video(plain, src, None, frames_dir=tmp_path / "frames")


def test_frames_overwritten_by_a_shorter_clip_leave_no_stale_frames(tmp_path, plain):
    long, short, frames = tmp_path / "long.mp4", tmp_path / "short.mp4", tmp_path / "frames"
    make_clip(long, 4, size=(32, 24), audio=False, rotation=0)
    make_clip(short, 2, size=(32, 24), audio=False, rotation=0)
    deblur_video(plain, long, None, frames_dir=frames)
    (frames / "notes.txt").write_text("kept")
    r = deblur_video(plain, short, None, frames_dir=frames, overwrite=True)
    assert r.frames == 2
    assert sorted(p.name for p in frames.iterdir()) == ["frame_000001.png", "frame_000002.png", "notes.txt"]


# ------------------------------------------------------------------------ gate over time


def test_temporal_gate_smooths_hysteresis_and_snaps():
    rng = np.random.default_rng(0)
    raw = [1.0 if (i % 2 and i > 4) else 0.0 for i in range(40)]  # alternating deblurred / untouched
    g = TemporalGate(0.3)
    smooth = [g.update(i / 25, r).weight for i, r in enumerate(raw)]
    assert flicker(raw) > 10 and flicker(smooth) < 0.1 * flicker(raw)
    assert max(np.abs(np.diff(smooth))) < 0.15
    hover = TemporalGate(0.3)  # readings about the gate's lower end: weights 0..0.2 never switch it on
    assert all(hover.update(i / 25, float(w)).weight == 0.0 for i, w in enumerate(rng.uniform(0, 0.2, 30)))
    ramp = TemporalGate(0.3)
    ws = [ramp.update(i / 25, 1.0 if i >= 5 else 0.0).weight for i in range(60)]
    assert ws[:5] == [0.0] * 5 and ws[-1] == 1.0 and flicker(ws) == 0.0  # exact 0 and 1: network skipped / full
    off = TemporalGate(0.0)
    assert [off.update(i, r).weight for i, r in enumerate(raw)] == raw
    vfr = TemporalGate(0.3)  # the step follows the time between frames, not their count
    vfr.update(0.0, 0.0)
    vfr.on = True
    short = vfr.update(0.01, 1.0).weight
    vfr2 = TemporalGate(0.3)
    vfr2.update(0.0, 0.0)
    long = vfr2.update(0.2, 1.0).weight
    assert 0 < short < long < 1


def test_gate_does_not_flicker_on_a_clip_whose_blur_ramps_up(tmp_path, tiny_weights):
    """Blur growing from 1 to 12 px with frame-to-frame jitter of +-2.5 px (as camera shake varies):
    frame by frame the gate alternates between deblurred and untouched; smoothed it glides."""
    from deblur_cli.data.synthetic import BlurSettings, degrade, quantize

    sharp = _texture(0, 96, 128)
    n = 16
    frames = []
    for i in range(n):
        extent = max(1.0, 1 + 11 * i / (n - 1) + (2.5 if i % 2 else -2.5))
        img = (
            sharp
            if extent <= 1
            else quantize(degrade(sharp, np.random.default_rng(i), BlurSettings(), kind="linear", extent=extent))
        )
        frames.append((np.clip(img, 0, 1) * 255).round().astype(np.uint8))
    src = tmp_path / "ramp.mkv"
    make_clip(src, frames, size=(128, 96), audio=False, rotation=0)
    gated = Deblurrer("saphn-tiny", weights=tiny_weights, device="cpu", tile=0, gate=(4.0, 6.0))
    r = deblur_video(gated, src, None, frames_dir=tmp_path / "f", gate_interval=0)
    assert len(r.weights) == len(r.raw_weights) == n
    assert flicker(r.raw_weights) >= 2.0, r.raw_weights  # frame by frame: on, off, on, ...
    assert flicker(r.weights) < 0.15 * flicker(r.raw_weights), r.weights
    assert max(np.abs(np.diff(r.weights))) < 0.2 and r.weights[-1] > 0.5
    assert r.weights[0] == 0.0 and r.untouched >= 1 and r.blended >= 1
    from PIL import Image

    untouched = np.asarray(Image.open(tmp_path / "f" / "frame_000001.png"))
    np.testing.assert_array_equal(untouched, decode(src)["frames"][0])  # bit for bit: the network did not run
    r0 = deblur_video(gated, src, tmp_path / "unsmoothed.mkv", gate_smoothing=0, gate_interval=0)
    assert r0.weights == r0.raw_weights


# ------------------------------------------------------------------------------- safety


def test_interrupt_leaves_nothing(tmp_path, plain):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_clip(src, 6, size=(64, 48))
    before = threading.active_count()

    def interrupt(progress):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        deblur_video(plain, src, dst, batch_size=2, progress=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]  # no output, no temporary file
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before  # the decode and encode threads ended


def test_ctrl_c_in_the_command(tmp_path, tiny_weights):
    """A real SIGINT to ``deblur video`` while it writes: exit 130, no output, no temporary file."""
    src = tmp_path / "in.mp4"
    make_clip(src, 120, size=(160, 120), rotation=0)
    out = tmp_path / "out.mp4"
    code = "import sys; from deblur_cli.cli.main import main; main(sys.argv[1:])"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, "video", str(src), "-o", str(out), "--weights", str(tiny_weights),
                             "--gate", "off", "--batch-size", "1", "--device", "cpu"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env)  # fmt: skip
    deadline = time.time() + 60
    while not list(tmp_path.glob(".out.mp4.*.part")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()  # still running, temporary file being written
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_bad_inputs_give_one_line_errors(tmp_path, tiny_weights, capsys):
    (tmp_path / "text.mp4").write_text("not a video")
    good = tmp_path / "good.mp4"
    make_clip(good, 2, size=(64, 48))
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(good.read_bytes()[:400])
    (tmp_path / "taken.mp4").write_bytes(b"keep me")
    cases = [
        (["video", str(tmp_path / "missing.mp4")], "no such file"),
        (["video", str(tmp_path / "text.mp4")], "not a video FFmpeg can read"),
        (["video", str(tmp_path)], "is a directory"),
        (["video", str(truncated)], "cut.mp4"),
        (["video", str(good), "-o", str(tmp_path / "taken.mp4")], "already exists (use --overwrite"),
        (["video", str(good), "-o", str(tmp_path / "x.avi")], "cannot write .avi videos"),
        (["video", str(good), "-o", str(tmp_path / "x.mp4"), "--crf", "99"], "--crf for h264 must be 0 to 51"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exc:
            main([*args, "--weights", str(tiny_weights), "--device", "cpu"])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("deblur: error:") == 1 and message in err, (args, err)
        assert "Traceback" not in err
    assert (tmp_path / "taken.mp4").read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4", "good.mp4", "taken.mp4", "text.mp4"]


def test_command_end_to_end_and_overwrite(tmp_path, tiny_weights, cli):
    src = tmp_path / "clip.mov"
    make_clip(src, 3, size=(64, 48))
    result = cli("video", src, "--weights", tiny_weights, "--device", "cpu")
    out = tmp_path / "clip_deblurred.mov"
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and "3 frames" in result.stdout and out.exists()
    assert decode(out)["audio"] == decode(src)["audio"]
    result = cli("video", src, "--weights", tiny_weights, "--device", "cpu")
    assert result.exit_code != 0 and "already exists" in str(result.exception)
    result = cli("video", src, "--weights", tiny_weights, "--device", "cpu", "--overwrite", "--codec", "hevc")
    assert result.exit_code == 0, result.output
    assert decode(out)["codec"] == "hevc"


def test_folder_takes_videos_among_images(tmp_path, tiny_weights, cli):
    from PIL import Image

    root = tmp_path / "in"
    root.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / "a.png")
    make_clip(root / "b.avi", 2, size=(64, 48), audio=False, rotation=0, tags=(2, 2, 2, 0), pix_fmt="yuv420p")
    (root / "bad.mp4").write_text("not a video")
    images, videos = plan_media(root, tmp_path / "out")
    assert [s.name for s, _ in images] == ["a.png"]
    assert [(s.name, d.name) for s, d in videos] == [("b.avi", "b.mp4"), ("bad.mp4", "bad.mp4")]
    result = cli("folder", root, "-o", tmp_path / "out", "--weights", tiny_weights, "--device", "cpu")
    assert "1 of 3 file(s) failed" in str(result.exception)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.mp4"]
    assert len(decode(tmp_path / "out" / "b.mp4")["frames"]) == 2
    only = tmp_path / "only"
    only.mkdir()
    (root / "b.avi").rename(only / "b.avi")
    assert plan_media(only, tmp_path / "o2")[0] == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeblurError, match="or videos"):
        plan_media(tmp_path / "empty", None)


def test_without_pyav_one_line_says_how_to_install(monkeypatch):
    from deblur_cli.video import require_av

    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    with pytest.raises(DeblurError, match=r"pip install 'deblur-cli\[video\]'"):
        require_av()
