"""`plm export CHECKPOINT OUTPUT_DIR [--push REPO]`: a self-contained hub folder with a model card."""

import argparse
from pathlib import Path

HELP = "write a hub folder (safetensors, config + remote code, tokenizer, model card) and optionally push it"
PARSER_OPTIONS = {
    "formatter_class": argparse.RawDescriptionHelpFormatter,
    "epilog": (
        "examples:\n"
        "  plm export runs/demo/final exports/plm-demo\n"
        "  plm export runs/demo/final exports/plm-demo --eval-results results.json --dataset uniprot/swissprot\n"
        "  plm export runs/demo/final exports/plm-demo --push my-name/plm-demo --private   # needs `hf auth login`\n"
        "  plm export ./esm2-8m-plm exports/esm2-8m --max-shard-size 500MB\n"
        "  plm export runs/fsdp/checkpoints/step-0001000 exports/step-1000   # a training checkpoint (FSDP too)\n\n"
        "  plm export runs/demo/final exports/plm-demo --eval-results evals/demo/*_model_index.json\n\n"
        "--eval-results: JSON lists of {task, dataset, metric, value} objects (optional: task_name, dataset_name,\n"
        "dataset_split, metric_name, source), as `plm eval` writes them, put on the card's model-index."
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        help="a saved model folder (safetensors, config.json, tokenizer files) or a training checkpoint "
        "(runs/X/checkpoints/step-N, sharded by FSDP or not: its weights are consolidated into one model first)",
    )
    parser.add_argument("output_dir", help="the hub folder to write (must be new or empty)")
    parser.add_argument("--push", metavar="REPO_ID", default=None, help="push the folder to this hub repository")
    parser.add_argument("--repo-id", default=None, help="repository id for the card's code without pushing")
    parser.add_argument("--private", action="store_true", help="create the pushed repository as private")
    parser.add_argument(
        "--license", default="apache-2.0", help="license identifier for the card (default: %(default)s)"
    )
    parser.add_argument(
        "--dataset",
        action="append",
        default=None,
        help="a dataset id for the card metadata (repeat for several; default: the training record's source names)",
    )
    parser.add_argument(
        "--eval-results",
        nargs="+",
        default=None,
        help="JSON files of evaluation results for the model-index (lists, or `plm eval` *_results.json files)",
    )
    parser.add_argument("--max-shard-size", default="2GB", help="shard the safetensors above this size (default: 2GB)")


def run(args: argparse.Namespace) -> int:
    """A refused checkpoint or request raises ExportError (a ValueError): `plm export: error: ...`, exit 2."""
    import tempfile

    from ..training.distributed import consolidate_checkpoint, is_training_checkpoint

    with tempfile.TemporaryDirectory(prefix="plm-export-") as scratch:
        source = args.checkpoint
        if is_training_checkpoint(source):  # a training checkpoint, sharded (FSDP) or not: one model first
            source = str(consolidate_checkpoint(source, Path(scratch) / "model"))
        folder = _export(args, source)
    print(f"Wrote {folder}" + (f" and pushed it to https://huggingface.co/{args.push}" if args.push else ""))
    return 0


def _export(args: argparse.Namespace, source: str) -> Path:
    from ..hub.export import export_checkpoint

    return export_checkpoint(
        source,
        args.output_dir,
        repo_id=args.push or args.repo_id,
        license=args.license,
        datasets=args.dataset,
        eval_results=args.eval_results,
        max_shard_size=args.max_shard_size,
        push=args.push is not None,
        private=args.private,
    )
