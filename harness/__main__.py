"""``python -m harness check path/to/model.py:factory ...``: the same as the ``ac-conformance`` console script
(harness/user/cli.py).  The import name ``harness`` is shared with an unrelated PyPI package; the console script is the
documented entry point."""

import sys

from harness.user.cli import main

sys.exit(main())
