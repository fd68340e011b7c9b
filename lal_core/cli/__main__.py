"""`python -m lal_core.cli ...` is `lal ...` (the dashboard and `lal train --nproc` start runs
so, with the interpreter they run in)."""

import sys

from lal_core.cli import main

sys.exit(main())
