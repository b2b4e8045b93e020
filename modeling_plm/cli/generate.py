"""`plm generate MODEL`: sampling, or GLM span infilling with `--infill`; writes FASTA."""

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from ..hub.loading import load_pretrained, load_tokenizer
from ..inference.generation import DEFAULT_BATCH_SIZE, generate_sequences, infill_sequences
from . import options

HELP = "generate sequences or fill GLM spans (<smask>/<gmask>); writes FASTA"
FASTA_LINE_WIDTH = 60
__all__ = ["HELP", "add_arguments", "run"]

EPILOG = """examples:
  plm generate runs/demo/final --num-sequences 10 --max-length 200 --top-p 0.95 --seed 0 -o unconditional.fasta
  plm generate runs/demo/final --prompt MKTAYIAK --prompt MSLRSE --num-sequences 4 --temperature 0.8 -o prompted.fasta
  plm generate runs/demo/final --prompt MKT --greedy --max-length 60
  plm generate runs/demo/final --infill "MKTAYIAK<smask>SHFSRQ<smask>EPLE" --max-span-length 20
  plm generate runs/demo/final --infill "MKTAYIAKQRQ<gmask>" --sample --num-sequences 5 --seed 1 -o continued.fasta

Generated FASTA records are named gen_1, gen_2, ... with "prompt=<residues or -> finished=<True|False>"
(finished: the model ended the sequence with <eos> rather than being cut at --max-length); infilled records are
named infill_1, ... with "template=... spans=<span,span,...> finished=<per span>". Lengths count residues."""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of `plm generate` (on the subcommand's parser; also sets its description and examples)."""
    parser.description = (
        "Generate protein sequences with a causal LM (KV cache), unconditionally or from prompts, or fill GLM spans "
        "(<smask>) and continuations (<gmask>); only residue letters are ever produced. Writes FASTA."
    )
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model", help="a checkpoint folder or hub id (loaded with AutoModelForCausalLM)")
    task = parser.add_mutually_exclusive_group()
    task.add_argument(
        "--prompt", action="append", metavar="RESIDUES", help="start sequences with these residues (repeatable)"
    )
    task.add_argument(
        "--infill",
        action="append",
        metavar="TEMPLATE",
        help='fill the <smask> spans or the final <gmask> of a template such as "MKT<smask>LV" (repeatable)',
    )
    parser.add_argument(
        "--num-sequences", metavar="N", type=int, default=1, help="sequences per prompt or template (default 1)"
    )
    parser.add_argument(
        "--max-length",
        metavar="L",
        type=int,
        default=None,
        help="most residues per sequence, prompt included (default: context)",
    )
    parser.add_argument(
        "--min-length", metavar="L", type=int, default=0, help="fewest residues per sequence, prompt included"
    )
    parser.add_argument(
        "--max-span-length",
        metavar="L",
        type=int,
        default=None,
        help="--infill: most residues per span (default: context)",
    )
    parser.add_argument(
        "--temperature", metavar="T", type=float, default=1.0, help="sampling temperature (default 1.0)"
    )
    parser.add_argument(
        "--top-k", metavar="K", type=int, default=0, help="keep the k most likely residues (default 0: off)"
    )
    parser.add_argument(
        "--top-p", metavar="P", type=float, default=1.0, help="nucleus sampling mass (default 1.0: off)"
    )
    parser.add_argument(
        "--repetition-penalty", metavar="R", type=float, default=1.0, help="> 1 discourages repeats (default 1.0: off)"
    )
    decoding = parser.add_mutually_exclusive_group()
    decoding.add_argument("--greedy", action="store_true", help="most likely residue each step (default for --infill)")
    decoding.add_argument("--sample", action="store_true", help="sample (default for generation)")
    parser.add_argument("--seed", metavar="SEED", type=int, default=None, help="seed for reproducible sampling")
    parser.add_argument(
        "--batch-size",
        metavar="B",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"sequences per generate() call ({DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--device",
        metavar="DEVICE",
        type=options.device,
        default=None,
        help="cpu, cuda, cuda:1, ... (default: cuda when available)",
    )
    parser.add_argument(
        "--output", "-o", metavar="FASTA", default="-", help="FASTA file to write (default: standard output)"
    )
    return parser


def _fasta_record(name: str, description: str, sequence: str) -> str:
    lines = [sequence[start : start + FASTA_LINE_WIDTH] for start in range(0, len(sequence), FASTA_LINE_WIDTH)]
    return f">{name} {description}\n" + "".join(line + "\n" for line in lines or [""])


def _write_fasta(records: list[str], output: str) -> None:
    if output == "-":
        sys.stdout.write("".join(records))
        sys.stdout.flush()
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("".join(records))


def run(args: argparse.Namespace) -> int:
    """`plm generate`: load the model, generate or infill, write FASTA; returns the exit status (bad input raises
    ValueError, which `plm` turns into a message and exit code 2)."""
    if args.num_sequences > 1 and (args.greedy or (args.infill and not args.sample)):
        raise ValueError(
            f"--num-sequences {args.num_sequences} needs sampling: greedy decoding gives one result per "
            f"{'template' if args.infill else 'prompt'}{' (pass --sample)' if args.infill else ''}"
        )
    if args.infill:
        unused = {"--max-length": args.max_length, "--repetition-penalty": args.repetition_penalty != 1.0}
        unused["--min-length"] = args.min_length != 0
    else:
        unused = {"--max-span-length": args.max_span_length}
    given = [flag for flag, value in unused.items() if value not in (None, False)]
    if given:
        raise ValueError(f"{', '.join(given)} do(es) not apply {'with' if args.infill else 'without'} --infill")

    tokenizer = load_tokenizer(args.model)
    model = load_pretrained(AutoModelForCausalLM, args.model).to(options.default_device(args.device)).eval()
    common = {
        "num_return_sequences": args.num_sequences,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "seed": args.seed,
    }
    start = time.perf_counter()
    if args.infill:
        records, n_new = _infill_records(model, tokenizer, args, common)
    else:
        records, n_new = _generation_records(model, tokenizer, args, common)
    elapsed = time.perf_counter() - start
    _write_fasta(records, args.output)
    where = "standard output" if args.output == "-" else args.output
    print(
        f"Wrote {len(records)} sequence{'' if len(records) == 1 else 's'} to {where}: {n_new} new residues in "
        f"{elapsed:.1f} s "
        f"({n_new / max(elapsed, 1e-9):.0f}/s)",
        file=sys.stderr,
    )
    return 0


def _generation_records(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, args: argparse.Namespace, common: dict[str, Any]
) -> tuple[list[str], int]:
    results = generate_sequences(
        model,
        tokenizer,
        args.prompt or [""],
        batch_size=args.batch_size,
        progress=True,
        do_sample=not args.greedy,
        max_length=args.max_length,
        min_length=args.min_length,
        repetition_penalty=args.repetition_penalty,
        **common,
    )
    records, n_new = [], 0
    for result in (result for group in results for result in group):
        prompt = result["sequence"][: len(result["sequence"]) - len(result["generated"])]
        description = f"prompt={prompt or '-'} finished={result['finished']}"
        records.append(_fasta_record(f"gen_{len(records) + 1}", description, result["sequence"]))
        n_new += len(result["generated"])
    return records, n_new


def _infill_records(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, args: argparse.Namespace, common: dict[str, Any]
) -> tuple[list[str], int]:
    results = infill_sequences(
        model,
        tokenizer,
        args.infill,
        batch_size=args.batch_size,
        progress=True,
        do_sample=args.sample,
        max_span_length=args.max_span_length,
        **common,
    )
    records, n_new = [], 0
    for template, completions in zip(args.infill, results):
        for result in completions:
            description = (
                f"template={''.join(template.split())} spans={','.join(result['spans'])} "
                f"finished={','.join(str(flag) for flag in result['finished'])}"
            )
            records.append(_fasta_record(f"infill_{len(records) + 1}", description, result["sequence"]))
            n_new += sum(len(span) for span in result["spans"])
    return records, n_new
