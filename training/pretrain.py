"""Pretraining entry point: `python training/pretrain.py CONFIG.yaml [--flag value ...]`.

Also runs under `torchrun --nproc_per_node N training/pretrain.py ...` and
`accelerate launch --config_file training/accelerate/<engine>.yaml training/pretrain.py ...`,
and is the same job as `plm pretrain` (the same errors too: a message and exit code 2, no traceback). `--help` lists
every flag.
"""

import sys

from modeling_plm.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
