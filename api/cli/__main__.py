"""``python -m api.cli``: the ``flux`` command."""

import sys

from api.cli.main import main

sys.exit(main())
