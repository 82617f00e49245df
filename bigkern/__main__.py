"""``python -m bigkern ...``: the same command line as the ``bigkern`` console script."""

import sys

from bigkern.cli import main

sys.exit(main())
