"""`python -m service.cli …`, the same command as `regtrain …` (tests and `regtrain up` use it)."""

import sys

from service.cli.main import main

sys.exit(main())
