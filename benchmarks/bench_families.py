"""Every converted family against its reference model: the same weights, the same batches, forward passes timed.

For each family a random reference model (transformers' class, or the independent reference the tests check it
against) of one shape (6 layers, width 320, 5 heads of 64) is saved in the family's own checkpoint layout,
converted with `plm convert <family>`, and loaded as ours. Both then run the same length-sorted batches of real
Swiss-Prot sequences (token budget, right padding, the converted tokenizer's ids, which are the family's own); the
outputs are checked equal at the real positions before timing. Timing alternates the two models round by round and
keeps each one's best round, so load on the machine hits both alike. The reported rate is residues per second.

What runs: the masked-LM and causal-LM families compute their logits (the references only offer that for AMPLIFY and
ProteinGLM, so every family does the same); Ankh/ProtT5 compute the encoder's last hidden state.

    python benchmarks/bench_families.py                         # 300 sequences, every family
    python benchmarks/bench_families.py --families esmc t5 --sequences 100
"""

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from common import add_kernel_argument, kernel_suffix, report, swissprot_sequences
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    EsmConfig,
    EsmForMaskedLM,
    GPTJConfig,
    GPTJForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    T5Config,
    T5EncoderModel,
)

import modeling_plm  # noqa: F401  (registers the Auto classes)
from modeling_plm.data.collators import padded_inputs, token_budget_batches
from modeling_plm.hub.convert import CONVERTERS, ESM2_VOCAB

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the family tests' reference models and checkpoint writers (tests.*)
LAYERS, WIDTH, HEADS, FFN = 6, 320, 5, 1280


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model.eval()


def logits_of(model: torch.nn.Module) -> Callable[[dict], torch.Tensor]:
    return lambda batch: model(**batch).logits


def esm2(folder: Path) -> tuple[Path, Callable]:
    config = EsmConfig(
        vocab_size=33,
        hidden_size=WIDTH,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        pad_token_id=1,
        mask_token_id=32,
        position_embedding_type="rotary",
        token_dropout=True,
        max_position_embeddings=1026,
    )
    model = perturbed(EsmForMaskedLM(config))
    model.set_attn_implementation("sdpa")
    model.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(ESM2_VOCAB) + "\n")
    return folder, logits_of(model)


def esmc(folder: Path) -> tuple[Path, Callable]:
    from transformers import EsmcConfig, EsmcForMaskedLM

    from tests.test_family_esmc import save_esmc

    config = EsmcConfig(hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=1024)
    model = perturbed(EsmcForMaskedLM(config))
    model.set_attn_implementation("sdpa")
    return save_esmc(model, folder), logits_of(model)


def progen2(folder: Path) -> tuple[Path, Callable]:
    from tests.test_family_progen2 import save_progen

    config = GPTJConfig(
        vocab_size=32,
        n_embd=WIDTH,
        n_layer=LAYERS,
        n_head=HEADS,
        rotary_dim=32,
        n_positions=1024,
        activation_function="gelu_new",
        bos_token_id=3,
        eos_token_id=4,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    model = perturbed(GPTJForCausalLM(config))
    model.set_attn_implementation("sdpa")
    return save_progen(model, folder), logits_of(model)


def rita(folder: Path) -> tuple[Path, Callable]:
    from tests.test_family_rita import EOS, PAD, RITA_VOCAB, save_rita

    config = GPTNeoXConfig(
        vocab_size=len(RITA_VOCAB),
        hidden_size=WIDTH,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        hidden_act="gelu_fast",
        use_parallel_residual=False,
        rotary_pct=1.0,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=PAD,
        bos_token_id=EOS,
        eos_token_id=EOS,
    )
    model = perturbed(GPTNeoXForCausalLM(config))
    model.set_attn_implementation("sdpa")
    return save_rita(model, folder), logits_of(model)


def amplify(folder: Path) -> tuple[Path, Callable]:
    from tests.reference_amplify import AmplifyConfig, AmplifyReference, additive_pad_mask
    from tests.test_family_amplify import save_amplify

    config = AmplifyConfig(hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS)
    model = perturbed(AmplifyReference(replace(config, intermediate_size=FFN)))

    def run(batch: dict) -> torch.Tensor:
        return model(batch["input_ids"], additive_pad_mask(batch["attention_mask"]), backend="sdpa")[0]

    return save_amplify(model, folder), run


def xtrimopglm(folder: Path) -> tuple[Path, Callable]:
    from tests import reference_proteinglm as ref

    config = ref.ProteinGLMConfig(
        num_layers=LAYERS, hidden_size=WIDTH, ffn_hidden_size=853, kv_channels=64, num_attention_heads=HEADS
    )
    model = ref.build(config, output_layer_bias=True, seed=0).eval()
    return ref.save_checkpoint(model, folder), logits_of(model)


def t5(folder: Path) -> tuple[Path, Callable]:
    from tests.test_family_t5 import ankh_tokenizer

    config = T5Config(
        vocab_size=144,
        d_model=WIDTH,
        d_kv=64,
        num_heads=HEADS,
        d_ff=FFN,
        num_layers=LAYERS,
        feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=64,
        dropout_rate=0.0,
        is_encoder_decoder=False,
    )
    model = perturbed(T5EncoderModel(config))
    model.set_attn_implementation("sdpa")
    model.save_pretrained(folder)
    ankh_tokenizer().save_pretrained(folder)
    return folder, lambda batch: model(**batch).last_hidden_state


REFERENCE_NAMES = {
    "esm2": "EsmForMaskedLM",
    "esmc": "EsmcForMaskedLM",
    "progen2": "GPTJForCausalLM",
    "rita": "GPTNeoXForCausalLM",
    "amplify": "AMPLIFY (tests/reference_amplify.py)",
    "xtrimopglm": "ProteinGLM (tests/reference_proteinglm.py)",
    "t5": "T5EncoderModel",
}
# family -> (reference builder, the `plm convert` subcommand, the class ours loads as)
FAMILIES = {
    "esm2": (esm2, "esm2", AutoModelForMaskedLM),
    "esmc": (esmc, "esmc", AutoModelForMaskedLM),
    "progen2": (progen2, "progen2", AutoModelForCausalLM),
    "rita": (rita, "rita", AutoModelForCausalLM),
    "amplify": (amplify, "amplify", AutoModelForMaskedLM),
    "xtrimopglm": (xtrimopglm, "xtrimopglm", AutoModelForMaskedLM),
    "t5": (t5, "t5", AutoModel),
}


@torch.no_grad()
def seconds_of(run: Callable, batches: list[dict]) -> float:
    start = time.perf_counter()
    for batch in batches:
        run(batch)
    return time.perf_counter() - start


@torch.no_grad()
def largest_difference(ours: Callable, theirs: Callable, batch: dict) -> float:
    real = batch["attention_mask"].bool()
    return float((ours(batch)[real] - theirs(batch)[real]).abs().max())


def bench_family(name: str, sequences: list[str], args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    build, converter, auto_class = FAMILIES[name]
    torch.manual_seed(0)
    source, reference = build(tmp / name / "source")
    destination = CONVERTERS[converter].convert(source, tmp / name / "plm")
    kernel = args.cpu_linear_kernel
    model = auto_class.from_pretrained(destination, attn_implementation="sdpa", cpu_linear_kernel=kernel).eval()
    ours = logits_of(model) if auto_class is not AutoModel else (lambda batch: model(**batch).last_hidden_state)
    tokenizer = AutoTokenizer.from_pretrained(destination)
    rows = tokenizer(sequences)["input_ids"]
    if name == "xtrimopglm":  # ProteinGLM's own layout is `residues <eos>`; our tokenizer puts an `<eos>` in front
        rows = [row[1:] for row in rows]
    groups = token_budget_batches([len(row) for row in rows], args.token_budget)
    batches = [padded_inputs([rows[i] for i in group], tokenizer.pad_token_id) for group in groups]
    difference = largest_difference(ours, reference, batches[-1])
    times = {"reference": [], "ours": []}
    for _ in range(args.rounds):
        times["reference"].append(seconds_of(reference, batches))
        times["ours"].append(seconds_of(ours, batches))
    residues = sum(map(len, sequences))
    reference_rate, our_rate = residues / min(times["reference"]), residues / min(times["ours"])
    return {
        "family": name,
        "reference": REFERENCE_NAMES[name],
        "reference_residues_per_s": round(reference_rate),
        "ours_residues_per_s": round(our_rate),
        "ratio": round(our_rate / reference_rate, 2),
        "max_abs_difference": difference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--sequences", type=int, default=300)
    parser.add_argument("--token-budget", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    add_kernel_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sequences = swissprot_sequences(args.sequences, max_length=1000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.families:
            rows.append(bench_family(name, sequences, args, Path(tmp)))
            print(rows[-1], flush=True)
    shape = {"layers": LAYERS, "width": WIDTH, "heads": HEADS, "sequences": len(sequences), "rounds": args.rounds}
    extra = {"shape": shape, "cpu_linear_kernel": args.cpu_linear_kernel, "token_budget": args.token_budget}
    report(f"families{kernel_suffix(args.cpu_linear_kernel)}", rows, extra)


if __name__ == "__main__":
    main()
