"""`python -m distillguard.cli ...`: the same as the `distillguard` console script."""
import sys

from . import main

sys.exit(main())
