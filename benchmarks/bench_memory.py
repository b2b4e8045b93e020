"""Peak memory (RSS) of embedding one 10,000-residue protein: modeling_plm vs transformers' EsmModel.

Each measurement runs in a fresh subprocess, which reports its own peak resident set size (`ru_maxrss`): the model,
the activations and the framework, everything the process touched. The protein is a real Swiss-Prot sequence cut to
`--residues` residues. Rows:

- transformers `EsmModel` (sdpa), the whole sequence in one forward pass, as users call it;
- ours, the whole sequence in one forward pass (rotary positions run past the trained context, so this is a memory
  measurement, not a recommended setting);
- ours, the default: overlapping windows of the model's context, averaged per residue (`embed_sequences`).

    python benchmarks/bench_memory.py                      # ESM-2 8M shape, 10,000 residues
    python benchmarks/bench_memory.py --shape esm2_35m --residues 20000
"""

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch
from common import ESM_SHAPES, add_kernel_argument, esm_twin_folders, kernel_suffix, report, swissprot_sequences

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    import torch
    torch.set_num_threads({threads})
    engine, folder, sequence, kernel = {engine!r}, {folder!r}, {sequence!r}, {kernel!r}
    start = time.perf_counter()
    with torch.no_grad():
        if engine == "esm":
            from transformers import EsmModel, EsmTokenizer
            model = EsmModel.from_pretrained(folder, add_pooling_layer=False, attn_implementation="sdpa").eval()
            batch = EsmTokenizer(folder + "/vocab.txt")([sequence], return_tensors="pt")
            vector = model(**batch).last_hidden_state[0, 1:-1].mean(0)
        else:
            from modeling_plm import PLMModel, PLMTokenizerFast
            from modeling_plm.inference.embedding import embed_sequences
            model = PLMModel.from_pretrained(folder, attn_implementation="sdpa", cpu_linear_kernel=kernel).eval()
            tokenizer = PLMTokenizerFast.from_pretrained(folder)
            if engine == "plm-whole":
                vector = model(**tokenizer([sequence], return_tensors="pt")).last_hidden_state[0, 1:-1].mean(0)
            else:
                vector = torch.from_numpy(embed_sequences(model, tokenizer, [sequence])[0]["mean"])
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    assert vector.shape == (model.config.hidden_size,)  # the embedding was really computed
    print(json.dumps({{"peak_rss_mb": peak_kib / 1024, "seconds": seconds}}))
    """
)


def measure(engine: str, folder: Path, sequence: str, threads: int, kernel: str) -> dict:
    code = CHILD.format(engine=engine, folder=str(folder), sequence=sequence, threads=threads, kernel=kernel)
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{engine} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="esm2_8m", choices=ESM_SHAPES)
    parser.add_argument("--residues", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    add_kernel_argument(parser)
    args = parser.parse_args()
    longest = max(swissprot_sequences(50_000, max_length=100_000), key=len)
    if len(longest) < args.residues:
        raise ValueError(f"the longest sample sequence has {len(longest)} residues, fewer than {args.residues}")
    sequence = longest[: args.residues]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        esm_folder, plm_folder = esm_twin_folders(args.shape, Path(tmp))
        engines = {
            "transformers EsmModel (sdpa), whole sequence": ("esm", esm_folder),
            "modeling_plm, whole sequence in one pass": ("plm-whole", plm_folder),
            "modeling_plm embed_sequences, default context windows": ("plm-windows", plm_folder),
        }
        for name, (engine, folder) in engines.items():
            result = measure(engine, folder, sequence, args.threads, args.cpu_linear_kernel)
            rows.append({"engine": name, "peak_rss_mb": result["peak_rss_mb"], "seconds": result["seconds"]})
    report(
        f"memory_{args.shape}_{args.residues}{kernel_suffix(args.cpu_linear_kernel)}",
        rows,
        {
            "shape": args.shape,
            "residues": len(sequence),
            "cpu_linear_kernel": args.cpu_linear_kernel,
            "torch": torch.__version__,
        },
    )


if __name__ == "__main__":
    main()
