"""`python -m matslice ...` is `matslice ...`."""

import sys

from matslice.cli import main

sys.exit(main())
