"""`plm pretrain CONFIG.yaml [--flag value ...]`: the same job as `python training/pretrain.py`."""

HELP = "pretrain a model with accelerate (see: plm pretrain --help)"


def main(argv: list[str]) -> int:
    from ..training.trainer import main as pretrain_main

    return pretrain_main(argv)
