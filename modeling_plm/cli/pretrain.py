"""`plm pretrain CONFIG.yaml [--flag value ...]`: the same job as `python training/pretrain.py`."""

import logging

HELP = "pretrain a model with accelerate (see: plm pretrain --help)"
EXAMPLES = """examples:
  plm pretrain training/configs/smoke.yaml                      # < 2 min on a CPU
  plm pretrain training/configs/demo.yaml --max-steps 2000 --output-dir runs/demo
  plm pretrain training/configs/smoke.yaml --objective clm-mlm --transfer-fraction 0.2
  plm pretrain --preset plm_10m --train-file sprot.fasta.gz:3 --train-file metagenome.fasta:1 --objective glm
  plm pretrain training/configs/smoke.yaml --output-dir runs/smoke --resume auto   # continue after a stop
  plm shard sprot.fasta.gz corpora/sprot --shard-size 50000 && \
    plm pretrain training/configs/smoke.yaml --train-file corpora/sprot --num-workers 4   # parquet, 4 workers
  plm pretrain training/configs/smoke.yaml --train-file 's3://bucket/uniref50/*.parquet' --sequence-column seq
  torchrun --nproc_per_node 2 training/pretrain.py training/configs/smoke.yaml   # DDP (gloo on CPU)
  accelerate launch --config_file training/accelerate/fsdp2.yaml training/pretrain.py training/configs/plm_100m.yaml
"""


def load_pretrain_config(argv: list[str] | None = None):
    """A `PretrainConfig`: the YAML file's values first, then the flags that were given."""
    from ..training.arguments import config_parser, parse_config
    from ..training.trainer import PretrainConfig

    parser = config_parser(
        PretrainConfig,
        prog="plm pretrain",
        description="Pretrain a protein language model with accelerate (CPU, GPU, DDP, FSDP2, DeepSpeed).",
        epilog=EXAMPLES,
    )
    return parse_config(PretrainConfig, parser, argv)


def main(argv: list[str] | None = None) -> int:
    from accelerate import PartialState

    from ..training.trainer import pretrain

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("modeling_plm").setLevel(logging.INFO)
    final = pretrain(load_pretrain_config(argv))
    if PartialState().is_main_process:
        print(f"Saved the trained model to {final}")
    return 0
