"""``python -m gridsearch``: the command line."""

import sys

from gridsearch.cli import main

sys.exit(main())
