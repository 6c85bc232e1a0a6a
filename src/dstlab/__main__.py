"""`python -m dstlab` runs the command line."""

import sys

from dstlab.cli import main

sys.exit(main())
