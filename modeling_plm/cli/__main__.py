"""`python -m modeling_plm.cli` is `plm`."""

import sys

from .main import main

sys.exit(main())
