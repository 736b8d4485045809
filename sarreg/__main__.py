"""``python -m sarreg``."""

from sarreg.cli import exit_process, main

exit_process(main())
