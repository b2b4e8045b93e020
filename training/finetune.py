"""Fine-tuning entry point: `python training/finetune.py [CONFIG.yaml] [--flag value ...]`.

The same job as `plm finetune`; also runs under `accelerate launch training/finetune.py ...` and
`torchrun --nproc_per_node N training/finetune.py ...`, with `plm finetune`'s errors (a message and exit code 2).
`--help` lists every flag, with examples.
"""

import sys

from modeling_plm.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
