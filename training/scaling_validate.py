"""Validate the scaling-law fits against the logs released with Cheng et al. 2024.

The same job as `plm scaling validate`; regenerates the tables and figures of docs/scaling.md:

    python training/scaling_validate.py --data ../shared/data/scaling_protein_lm --output-dir docs/figures
"""

import sys

from modeling_plm.cli.scaling import main

if __name__ == "__main__":
    sys.exit(main(["validate", *sys.argv[1:]]))
