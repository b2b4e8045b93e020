"""`plm finetune CONFIG.yaml [--flag value ...]`: LoRA or full fine-tuning."""

HELP = "fine-tune (LoRA or full) for sequence or per-residue tasks (see: plm finetune --help)"


def main(argv: list[str]) -> int:
    from ..training.finetune import main as finetune_main

    return finetune_main(argv)
