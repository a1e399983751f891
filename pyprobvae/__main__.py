"""``python -m pyprobvae``, the ``pyprobvae`` command; what ``torchrun -m pyprobvae`` starts in each process."""

import sys

from .cli import main

sys.exit(main())
