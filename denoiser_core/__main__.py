"""``python -m denoiser_core`` runs the ``kprcan`` command line."""

import sys

from denoiser_core.cli import main

sys.exit(main())
