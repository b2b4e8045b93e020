"""The `plm` command line."""

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plm",
        description="Protein language models for the Hugging Face ecosystem.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n  plm pretrain training/configs/demo.yaml && plm demo --model runs/demo/final\n"
            "  plm demo --preset esm2_8m --num-sequences 16\n"
            "  plm finetune training/configs/finetune_gb1.yaml\n"
            "  plm scaling plan --flops 1e21 --objective mlm --transfer\n"
            "  plm embed runs/demo/final proteins.fasta.gz embeddings/ --pooling mean max\n"
            "  plm generate runs/demo/final --infill 'MKTAYIAK<smask>SHFSRQ'\n"
            "  plm score runs/demo/final --sequence MKTAYIAKQR --mutation K2A\n"
            "  plm export runs/demo/final exports/plm-demo --push my-name/plm-demo\n"
            "  plm convert esm2 ./esm2_t6_8M_UR50D ./esm2-8m-plm\n  plm convert to-esm2 ./esm2-8m-plm ./esm2-8m-back"
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    # `plm pretrain` hands its arguments to the trainer's own parser (`plm pretrain --help` lists them).
    commands.add_parser("pretrain", help="pretrain a model with accelerate (see: plm pretrain --help)", add_help=False)
    # Likewise `plm finetune` and `plm scaling` have their own parsers.
    commands.add_parser(
        "finetune",
        help="fine-tune (LoRA or full) for sequence or per-residue tasks (see: plm finetune --help)",
        add_help=False,
    )
    commands.add_parser(
        "scaling",
        help="compute-optimal planning, scaling-law fits and sweeps (see: plm scaling --help)",
        add_help=False,
    )

    demo = commands.add_parser(
        "demo",
        help="build a small model and use it as masked LM, causal LM and GLM infiller on real sequences",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog=(
            "examples:\n  plm demo --model runs/demo/final\n"
            "  plm demo --preset small --fasta my_proteins.fasta.gz --num-sequences 16"
        ),
    )
    demo.add_argument("--model", default=None, help="a trained checkpoint folder (default: build an untrained one)")
    demo.add_argument("--preset", default="small", help="model preset when no --model (see modeling_plm.PRESETS)")
    demo.add_argument("--fasta", default=None, help="FASTA(.gz) of sequences; default: the shared Swiss-Prot sample")
    demo.add_argument("--num-sequences", type=int, default=8)
    demo.add_argument("--max-length", type=int, default=200, help="skip longer sequences")
    demo.add_argument("--output-dir", default="outputs/demo-model")
    demo.add_argument("--seed", type=int, default=0)

    convert = commands.add_parser(
        "convert",
        help="convert checkpoints between transformers' ESM-2 and modeling_plm",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  plm convert esm2 ./esm2_t6_8M_UR50D ./esm2-8m-plm       # a local folder laid out like facebook/esm2_*\n"
            "  plm convert esm2 facebook/esm2_t6_8M_UR50D ./esm2-8m-plm  # a hub id, when online\n"
            "  plm convert to-esm2 ./esm2-8m-plm ./esm2-8m-esm          # back to transformers' EsmForMaskedLM"
        ),
    )
    directions = convert.add_subparsers(dest="direction", required=True)
    to_plm = directions.add_parser("esm2", help="ESM-2 checkpoint (folder or hub id) -> modeling_plm checkpoint")
    to_plm.add_argument("source", help="folder with config.json, model.safetensors or pytorch_model.bin, vocab.txt")
    to_plm.add_argument("destination", help="output folder (safetensors, config, remote code, tokenizer)")
    to_esm = directions.add_parser("to-esm2", help="modeling_plm checkpoint -> transformers ESM-2 checkpoint")
    to_esm.add_argument("source", help="a modeling_plm checkpoint folder whose architecture ESM-2 can express")
    to_esm.add_argument("destination", help="output folder (EsmForMaskedLM safetensors, config, vocab.txt)")

    from ..inference.embedding import EMBED_HELP, add_embed_arguments
    from ..inference.generation import add_generate_arguments
    from ..inference.scoring import SCORE_HELP, add_score_arguments

    add_embed_arguments(commands.add_parser("embed", help=EMBED_HELP))
    add_generate_arguments(
        commands.add_parser("generate", help="generate sequences or fill GLM spans (<smask>/<gmask>); writes FASTA")
    )
    add_score_arguments(commands.add_parser("score", help=SCORE_HELP))
    from ..hub.export import EXPORT_HELP, add_export_arguments

    add_export_arguments(commands.add_parser("export", help=EXPORT_HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "pretrain":
        from ..training.trainer import main as pretrain_main

        return pretrain_main(argv[1:])
    if argv and argv[0] == "finetune":
        from ..training.finetune import main as finetune_main

        return finetune_main(argv[1:])
    if argv and argv[0] == "scaling":
        from ..scaling.cli import main as scaling_main

        return scaling_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        run_demo(args.model, args.preset, args.fasta, args.num_sequences, args.max_length, args.output_dir, args.seed)
    elif args.command == "convert":
        from ..hub.convert import convert_esm2, convert_plm_to_esm2

        convert = convert_esm2 if args.direction == "esm2" else convert_plm_to_esm2
        print(f"Wrote {convert(args.source, args.destination)}")
    elif args.command == "embed":
        from ..inference.embedding import run_embed

        return run_embed(args)
    elif args.command == "generate":
        from ..inference.generation import run_generate

        return run_generate(args)
    elif args.command == "score":
        from ..inference.scoring import run_score

        return run_score(args)
    elif args.command == "export":
        from ..hub.export import run_export

        return run_export(args)
    return 0

