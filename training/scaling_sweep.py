"""Scaling-law sweep entry point: `python training/scaling_sweep.py CONFIG.yaml [--flags]`.

The same job as `plm scaling sweep CONFIG.yaml`; `--help` lists the flags, with examples. The CPU study:
`OMP_NUM_THREADS=1 python training/scaling_sweep.py training/configs/scaling_cpu.yaml`.
"""

import sys

from modeling_plm.cli.scaling import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
