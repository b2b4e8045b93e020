"""`python -m modeling_plm` is `plm`."""

import sys

from .cli.main import main

sys.exit(main())
