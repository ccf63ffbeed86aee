"""Component networks (one per light component, diffuse and specular) and their registry.

Importing this package registers every architecture: ``kpcn``, ``kprcn``, ``kprcan`` (kernel
predicting), ``direct_cnn``, ``direct_rcn``, ``direct_rcan`` (direct prediction) and ``kpunet`` (the
fast multi-scale kernel-predicting U-Net).
"""

from training.archs import single_scale, unet  # noqa: F401  (registers the architectures)
from training.archs.registry import ARCH_REGISTRY, arch_arguments, build_arch, register

__all__ = ["ARCH_REGISTRY", "arch_arguments", "build_arch", "register"]
