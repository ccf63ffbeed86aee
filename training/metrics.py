"""Image-quality metrics used by evaluation and the model card.

relMSE is measured on linear HDR values (Rousselle et al. 2011); PSNR, SSIM and FLIP on the clamped sRGB
image a viewer sees (``denoiser_core.images.to_srgb``), so the numbers match the demo's and OIDN's usual
reporting. FLIP is NVIDIA's perceptual metric (Andersson et al. 2020), in its LDR mode on those sRGB values.
"""

from __future__ import annotations

import numpy as np

from denoiser_core.images import psnr, to_srgb

RELMSE_EPSILON = 1e-2


def relmse(image: np.ndarray, reference: np.ndarray) -> float:
    """Mean of (x - y)^2 / (y^2 + eps) over pixels and RGB channels, on linear HDR values."""
    x = np.asarray(image, np.float64)[..., :3]
    y = np.asarray(reference, np.float64)[..., :3]
    return float(np.mean((x - y) ** 2 / (y * y + RELMSE_EPSILON)))


def ssim(image_srgb: np.ndarray, reference_srgb: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(image_srgb, reference_srgb, channel_axis=2, data_range=1.0))


def flip(image_srgb: np.ndarray, reference_srgb: np.ndarray) -> float:
    import flip_evaluator

    _error_map, mean_error, _parameters = flip_evaluator.evaluate(
        np.ascontiguousarray(reference_srgb, np.float32), np.ascontiguousarray(image_srgb, np.float32),
        "LDR", inputsRGB=True, applyMagma=False)
    return float(mean_error)


def all_metrics(image: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Every metric of the model card for one linear-HDR image against its reference."""
    image_srgb, reference_srgb = to_srgb(image), to_srgb(reference)
    return {
        "relmse": relmse(image, reference),
        "psnr": psnr(image_srgb, reference_srgb),
        "ssim": ssim(image_srgb, reference_srgb),
        "flip": flip(image_srgb, reference_srgb),
    }
