"""``python -m nasframe`` runs the CLI (``torchrun -m nasframe`` too)."""

import sys

from nasframe.app.cli import main

sys.exit(main())
