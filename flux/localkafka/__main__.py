"""``python -m flux.localkafka start|stop|kill|status|jars``: see :mod:`flux.localkafka.cli`."""

import sys

from flux.localkafka.cli import main

sys.exit(main())
