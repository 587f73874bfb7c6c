"""``python -m regbench.cli``: what ``torchrun -m`` launches for multi-GPU training."""

import sys

from regbench.cli import main

sys.exit(main())
