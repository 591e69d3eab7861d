"""Evaluation: PSNR/SSIM on blurred-sharp pairs, bootstrap intervals, and the paper's analysis
of the learned filter offsets against the PSF direction."""
