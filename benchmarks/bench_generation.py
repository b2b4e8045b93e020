"""Generation throughput: modeling_plm's PLMForCausalLM vs transformers' LlamaForCausalLM of the same shape and
the same weights, both with `generate()` and the KV cache (greedy, fixed length). A bare decode loop (one forward per
token, no `generate()`) is timed too, to separate the model's own cost from the loop's.

    python benchmarks/bench_generation.py                       # 6 layers x 320, batch of 8 prompts, 100 new tokens
    python benchmarks/bench_generation.py --layers 12 --hidden 480 --heads 8 --new-tokens 200
"""

import argparse
import contextlib
import time

import torch
from common import add_kernel_argument, kernel_suffix, report, swissprot_sequences
from transformers import LlamaConfig, LlamaForCausalLM

from modeling_plm import PLMConfig, PLMForCausalLM, PLMTokenizerFast
from modeling_plm.kernels import decoding_projections
from modeling_plm.modeling_plm import CACHE_NAME


def llama_twin(model: PLMForCausalLM) -> LlamaForCausalLM:
    """A LlamaForCausalLM with exactly our weights (our Llama-style blocks map one to one)."""
    config = model.config
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_key_value_heads,
            head_dim=config.head_dim,
            hidden_act="silu",
            max_position_embeddings=config.max_position_embeddings,
            rms_norm_eps=config.layer_norm_eps,
            rope_theta=config.rope_theta,
            tie_word_embeddings=True,
            attention_bias=False,
            mlp_bias=False,
            pad_token_id=config.pad_token_id,
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
        )
    )
    renames = {
        "model.embeddings.word_embeddings": "model.embed_tokens",
        "attention_norm": "input_layernorm",
        "mlp_norm": "post_attention_layernorm",
        "lm_head.decoder": "lm_head",
    }
    state = {}
    for name, tensor in model.state_dict().items():
        for old, new in renames.items():
            name = name.replace(old, new)
        state[name] = tensor
    missing, unexpected = llama.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise RuntimeError(f"weight mapping failed: missing {missing}, unexpected {unexpected}")
    llama.tie_weights()
    return llama.eval()


def decode_loop_seconds(model, input_ids: torch.Tensor, new_tokens: int) -> float:
    """Seconds for new_tokens - 1 greedy steps by hand after the prefill: one forward per token with the model's
    cache and no `generate()` bookkeeping, which isolates the model's own per-token cost. Ours runs on the packed
    projections that its `generate()` uses."""
    packing = decoding_projections(model) if isinstance(model, PLMForCausalLM) else contextlib.nullcontext()
    with packing:
        output = model(input_ids=input_ids, use_cache=True)
        cache, token = output[CACHE_NAME], output.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(new_tokens - 1):
            output = model(input_ids=token, use_cache=True, logits_to_keep=1, **{CACHE_NAME: cache})
            token = output.logits[:, -1:].argmax(-1)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=320)
    parser.add_argument("--heads", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    add_kernel_argument(parser)
    parser.add_argument("--rounds", type=int, default=5, help="timed generate() calls per engine, alternated")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = PLMConfig(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        mlp_type="glu",
        hidden_act="silu",
        norm_type="rmsnorm",
        attention_bias=False,
        mlp_bias=False,
        lm_head_transform=False,
        lm_head_bias=False,
        max_position_embeddings=1024,
        cpu_linear_kernel=args.cpu_linear_kernel,
    )
    ours = PLMForCausalLM(config).eval()
    ours.set_attn_implementation("sdpa")
    llama = llama_twin(ours)
    tokenizer = PLMTokenizerFast()
    prompts = [s[:10] for s in swissprot_sequences(args.prompts)]
    input_ids = torch.tensor(
        [[tokenizer.bos_token_id] + tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    )
    options = dict(
        max_new_tokens=args.new_tokens,
        min_new_tokens=args.new_tokens,
        do_sample=False,
        use_cache=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=None,
    )

    engines = {"llama": llama, "ours": ours}
    loop_seconds = dict.fromkeys(engines, 0.0)
    outputs, seconds = {}, dict.fromkeys(engines, 0.0)
    with torch.no_grad():
        for model in engines.values():  # warm-up
            model.generate(input_ids[:, :4], **{**options, "max_new_tokens": 8, "min_new_tokens": 8})
        for _ in range(args.rounds):  # alternate, so load on the machine hits both alike
            for name, model in engines.items():
                start = time.perf_counter()
                outputs[name] = model.generate(input_ids, **options)
                seconds[name] += time.perf_counter() - start
        for _ in range(args.rounds):
            for name, model in engines.items():
                loop_seconds[name] += decode_loop_seconds(model, input_ids, args.new_tokens)
    llama_seconds, our_seconds = seconds["llama"] / args.rounds, seconds["ours"] / args.rounds
    llama_loop, our_loop = loop_seconds["llama"] / args.rounds, loop_seconds["ours"] / args.rounds
    llama_out, our_out = outputs["llama"], outputs["ours"]
    new_tokens = args.prompts * args.new_tokens
    agreement = (our_out[:, input_ids.shape[1] :] == llama_out[:, input_ids.shape[1] :]).float().mean().item()
    rows = [
        {
            "engine": "transformers LlamaForCausalLM.generate (sdpa)",
            "seconds": llama_seconds,
            "tokens_per_s": new_tokens / llama_seconds,
        },
        {
            "engine": "modeling_plm PLMForCausalLM.generate (sdpa)",
            "seconds": our_seconds,
            "tokens_per_s": new_tokens / our_seconds,
        },
        {
            "engine": "transformers LlamaForCausalLM, bare decode loop (forward per token)",
            "seconds": llama_loop,
            "tokens_per_s": args.prompts * (args.new_tokens - 1) / llama_loop,
        },
        {
            "engine": "modeling_plm PLMForCausalLM, bare decode loop (forward per token)",
            "seconds": our_loop,
            "tokens_per_s": args.prompts * (args.new_tokens - 1) / our_loop,
        },
    ]
    report(
        f"generation{kernel_suffix(args.cpu_linear_kernel)}",
        rows,
        {
            "shape": f"{args.layers}x{args.hidden}, {args.heads} heads",
            "cpu_linear_kernel": type(ours.model.layers[0].mlp.down_proj).__name__,
            "prompts": args.prompts,
            "new_tokens_each": args.new_tokens,
            "speedup": llama_seconds / our_seconds,
            "speedup_bare_decode_loop": llama_loop / our_loop,
            "greedy_token_agreement": agreement,
        },
    )


if __name__ == "__main__":
    main()
