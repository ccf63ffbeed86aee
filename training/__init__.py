"""Training side of the denoiser (torch): networks (``training.archs``), the exported graph
(``training.graph``), losses, configs, the training loop (``train.py``) and ONNX export (``export.py``).
``denoiser_core`` never imports this package."""
