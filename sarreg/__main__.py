"""``python -m sarreg``."""

import sys

from sarreg.cli import main

sys.exit(main())
