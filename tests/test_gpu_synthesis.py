"""The batched torch synthesis (run here on CPU tensors) against the numpy/OpenCV reference.

Tolerances, and why:

* disk PSFs, per-sample filtering, trajectory matrices and warps compute the same formulas as
  the reference in float32: they must agree to float rounding (1e-5; 1e-4 for the warps, whose
  bilinear weights OpenCV computes in its own order).
* the line PSF is drawn by OpenCV's anti-aliased thick-line rasteriser in the reference and by
  an analytic capsule coverage here, exactly centred; OpenCV's rounds the end points to 1/16
  of a fine pixel and puts up to a tenth of a short line's mass on one end (its centroid is up
  to 0.06 px off). So the kernels differ by a few per cent of their mass (L1 <= 0.2, the most
  for 2-3 px lines) with the same centre and length (to 0.1 px or 5 %). What matters is the
  blurred image: for the 5-25 px lines of the blur range it must differ from the reference's by
  under 2 % of the blur's own squared error, and for any line by less than 1.5 8-bit levels RMS (PSNR > 44.6 dB) even on the test's stripes of
  a 2-3 px period. Training pairs are quantised to 8 bits anyway, so a difference of about one
  level is of the size of the rounding the reference itself applies.
* the JPEG round trip models libjpeg's colour conversion, 4:2:0 sampling, quantisation tables
  and upsampling, but not its integer DCT rounding: the decoded images must agree with
  OpenCV's to 40 dB, and their error against the source to within 0.5 dB of OpenCV's.
* noise: its measured standard deviation in linear light must be within 5 % of the model's
  (200k samples: the estimate's own relative error is about 0.2 %).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deblur_cli.data import gpu_synthesis as G
from deblur_cli.data import synthetic as S
from deblur_cli.data.gpu_jpeg import jpeg_round_trip, quant_tables
from deblur_cli.data.gpu_pairs import TorchSyntheticPairs
from deblur_cli.data.synthetic import BlurSettings


def _photo(h: int = 96, w: int = 112, seed: int = 0) -> np.ndarray:
    """A textured float32 sRGB image ``(h, w, 3)``: smooth noise plus stripes."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.random((h // 6, w // 6, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w]
    img[..., 1] = 0.5 + 0.35 * np.sin(xx / 2.5 + yy / 7.0)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].contiguous()


def _np(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).numpy()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-12))


def test_srgb_transfer_matches_reference():
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    np.testing.assert_allclose(G.srgb_to_linear(torch.from_numpy(x)).numpy(), S.srgb_to_linear(x), atol=1e-6)
    np.testing.assert_allclose(G.linear_to_srgb(torch.from_numpy(x)).numpy(), S.linear_to_srgb(x), atol=1e-6)


@pytest.mark.parametrize("radius", [1.0, 2.5, 6.0])
def test_disk_psfs_equal_reference(radius):
    ref = S.disk_psf(radius)
    got = G.disk_psfs(torch.tensor([radius]), ref.shape[0])[0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_filter_per_sample_equals_cv2_filter2d_with_reflect_border():
    imgs = [_photo(40, 52, 1), _photo(40, 52, 2)]
    kernels = [S.linear_psf(15, 30), np.pad(S.disk_psf(3.0), 4)]  # both 15 x 15
    got = G.filter_per_sample(torch.cat([_t(i) for i in imgs]), torch.from_numpy(np.stack(kernels)))
    for i, (img, k) in enumerate(zip(imgs, kernels)):
        ref = cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT)
        np.testing.assert_allclose(_np(got[i : i + 1]), ref, atol=1e-5)


@pytest.mark.parametrize(
    "length,angle", [(5.0, 0.0), (9.3, 30.0), (15.0, 45.0), (25.0, 100.0), (12.7, 91.0), (2.0, 170.0)]
)
def test_line_psfs_match_reference_kernel_and_blur(length, angle):
    ref = S.linear_psf(length, angle)
    k = ref.shape[0]
    assert G.kernel_size(length) == k
    got = G.line_psfs(torch.tensor([length]), torch.tensor([angle]), k)[0].numpy()
    assert abs(got.sum() - 1.0) < 1e-5
    assert np.abs(got - ref).sum() <= 0.2
    # Same centre and the same spread along the motion direction (the blur length).
    c = (np.arange(k) - k // 2).astype(np.float64)
    xx, yy = np.meshgrid(c, c)
    along = xx * math.cos(math.radians(angle)) - yy * math.sin(math.radians(angle))
    assert abs((got * xx).sum()) < 1e-4 and abs((got * yy).sum()) < 1e-4  # exactly centred
    assert abs((ref * xx).sum()) < 0.1 and abs((ref * yy).sum()) < 0.1  # OpenCV's rasteriser: nearly
    spread = [math.sqrt((kern * along**2).sum()) for kern in (got, ref)]
    assert spread[0] == pytest.approx(spread[1], rel=0.05, abs=0.1)
    # The blurred image, in linear light as the pipeline does it.
    img = _photo(80, 80, 3)
    lin = S.srgb_to_linear(img)
    want = S.linear_to_srgb(cv2.filter2D(lin, -1, ref, borderType=cv2.BORDER_REFLECT))
    have = _np(G.linear_to_srgb(G.filter_per_sample(G.srgb_to_linear(_t(img)), torch.from_numpy(got)[None])))
    assert _psnr(have, want) > 20 * math.log10(255 / 1.5)
    if length >= 5:  # nearly sharp samples (1-3 px) are judged by the absolute bound alone
        assert np.mean((have - want) ** 2) < 0.02 * np.mean((want - img) ** 2)


@pytest.mark.parametrize("seed", [0, 5, 11])
def test_shake_matrices_and_warps_equal_reference(seed):
    h, w, frames, extent = 60, 70, 15, 12.0
    mats = np.stack(S.shake_warps(np.random.default_rng(seed), (h, w), extent, frames))
    rng = np.random.default_rng(seed)  # the same draws, in the reference's order
    coef, mix = rng.normal(size=(4, 2)), rng.dirichlet([1.0, 1.0, 0.5])
    centre = [rng.uniform(-0.5, 1.5) * w, rng.uniform(-0.5, 1.5) * h]
    got = G.shake_matrices(torch.tensor(coef)[None], torch.tensor(mix)[None], torch.tensor([centre]), (h, w),
                           torch.tensor([extent]), frames)[0].numpy()  # fmt: skip
    np.testing.assert_allclose(got, mats, rtol=1e-5, atol=1e-4)
    img = cv2.GaussianBlur(_photo(h, w, seed), (0, 0), 1.0)
    ref = (
        sum(cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) for m in mats)
        / frames
    )
    have = _np(G.warp_average(_t(img), torch.from_numpy(mats)[None]))
    np.testing.assert_allclose(have, ref, atol=1e-4)
    assert np.abs(ref - img).mean() > 1e-3  # the warps did blur


def test_noise_has_the_modelled_variance_in_linear_light():
    grey = torch.full((2, 3, 200, 200), 0.5)
    sigma, shot = torch.tensor([0.01, 0.0]), torch.tensor([0.0, 2e-4])
    gen = torch.Generator().manual_seed(0)
    noisy = G.srgb_to_linear(G.add_noise(grey, sigma, shot, gen))
    lin = float(G.srgb_to_linear(torch.tensor(0.5)))
    for i, want in enumerate([0.01, math.sqrt(2e-4 * lin)]):
        assert float((noisy[i] - lin).std()) == pytest.approx(want, rel=0.05)


def test_quant_tables_are_libjpegs():
    luma, chroma = quant_tables(torch.tensor([50, 75, 100, 10]))
    assert luma[0, 0, 0] == 16 and chroma[0, 0, 0] == 17  # quality 50 is the standard table
    assert luma[1, 0, 0] == 8 and luma[2].max() == 1  # (16 * 50 + 50) // 100; quality 100: all ones
    assert luma[3, 7, 7] == 255  # clamped


@pytest.mark.parametrize("quality", [75, 85, 95])
def test_jpeg_round_trip_matches_opencv(quality):
    imgs = [np.round(_photo(72, 88, s) * 255) / 255 for s in (0, 1)]
    got = jpeg_round_trip(torch.cat([_t(i) for i in imgs]), torch.tensor([quality, quality]))
    for i, img in enumerate(imgs):
        u8 = (img * 255 + 0.5).astype(np.uint8)
        _, buf = cv2.imencode(".jpg", u8[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        ref = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255.0
        have = _np(got[i : i + 1])
        assert np.array_equal(np.round(have * 255), have * 255)  # 8-bit levels
        assert _psnr(have, ref) > 40.0
        assert _psnr(have, img) == pytest.approx(_psnr(ref, img), abs=0.5)


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(3):
        cv2.imwrite(str(d / f"p{i}.png"), (_photo(120, 150, i)[:, :, ::-1] * 255 + 0.5).astype(np.uint8))
    return d


def test_torch_pairs_batches_are_quantised_blurred_and_resumable(photo_dir):
    settings = BlurSettings(defocus_prob=0.5, identity_prob=0.1, noise_prob=0.5, jpeg_prob=0.5)
    src = TorchSyntheticPairs(photo_dir, crop=48, settings=settings, seed=3)
    state = src.rng_state()
    blur, sharp = src.batch(12)
    assert blur.shape == sharp.shape == (12, 3, 48, 48) and blur.dtype == torch.float32
    for x in (blur, sharp):
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert torch.equal(torch.round(x * 255), x * 255)
    assert float(((blur - sharp) ** 2).mean()) > 1e-4  # blurred on average
    src.set_rng_state(state)
    again = src.batch(12)
    assert torch.equal(again[0], blur) and torch.equal(again[1], sharp)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run it on the accelerator)")
def test_torch_pairs_batch_never_waits_for_the_gpu(photo_dir):
    """A blocking host-to-device copy waits for all queued GPU work (a training step), so the
    host could not prepare the next batch meanwhile: making a batch must not synchronise."""
    settings = BlurSettings(defocus_prob=0.5, identity_prob=0.1, noise_prob=0.5, jpeg_prob=0.5)
    src = TorchSyntheticPairs(photo_dir, crop=48, settings=settings, seed=3, device="cuda")
    src.batch(12)  # the first batch initialises cuFFT plans and kernels
    torch.cuda.set_sync_debug_mode("error")
    try:
        blur, _ = src.batch(12)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert blur.is_cuda and blur.shape == (12, 3, 48, 48)


def test_torch_pairs_blur_as_much_as_the_reference(photo_dir):
    """Same settings, no noise or JPEG: the mean blur error of both samplers agrees to a factor 1.5."""
    from deblur_cli.data.datasets import SyntheticPairs

    settings = BlurSettings(noise_prob=0.0, jpeg_prob=0.0, sharp_prob=0.0)
    torch_src = TorchSyntheticPairs(photo_dir, crop=40, settings=settings, seed=1)
    ref_src = SyntheticPairs(photo_dir, crop=40, settings=settings, seed=1)
    mse = []
    for src in (torch_src, ref_src):
        b, s = src.batch(48)
        mse.append(float(np.mean((np.asarray(b) - np.asarray(s)) ** 2)))
    assert 1 / 1.5 < mse[0] / mse[1] < 1.5
