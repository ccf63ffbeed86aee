"""``python -m denoiser_core`` runs the ``kprcan`` command line."""

import sys

from .cli import main

sys.exit(main())
