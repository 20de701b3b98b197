"""``python -m cimc`` is the ``cimc`` command."""

import sys

from cimc.cli import main

sys.exit(main())
