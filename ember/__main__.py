"""Run the ``ember`` command line: ``python -m ember run SPEC.json --out DIR``."""

import sys

from ember.cli import main

sys.exit(main())
