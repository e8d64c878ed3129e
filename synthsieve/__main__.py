"""`python -m synthsieve`: the same as the `synthsieve` command."""

import sys

from synthsieve.cli import main

sys.exit(main())
