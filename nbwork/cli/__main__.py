"""``python -m nbwork.cli``: the ``nbwork`` command."""

import sys

from . import main

sys.exit(main())
