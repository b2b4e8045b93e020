"""Generation and GLM infilling: the "protein-generation" / "protein-infilling" pipelines and `plm generate`.

Tiny untrained models, saved to a temporary folder and loaded through `transformers.pipeline`. One of them has its
LM-head bias raised on `<eos>` and `<eop>`, so that sequences and spans end on their own at random lengths.
"""

import argparse

import pytest
import torch
from transformers import pipeline

import modeling_plm  # noqa: F401  (registers the Auto classes)
from modeling_plm import PLMConfig, PLMForMaskedLM, PLMTokenizerFast, config_from_preset
from modeling_plm.cli.generate import add_arguments as add_generate_arguments
from modeling_plm.cli.generate import run as run_generate
from modeling_plm.cli.main import main
from modeling_plm.data.collators import glm_infill_inputs
from modeling_plm.data.fasta import read_fasta
from modeling_plm.hub.convert import ESM2_VOCAB
from modeling_plm.inference.generation import (
    generate_sequences,
    infill_sequences,
)
from modeling_plm.training.presets import XTRIMOPGLM_ARCHITECTURE

RESIDUES = set("ACDEFGHIKLMNPQRSTVWYXBZUO")
CONTEXT = 130  # max_position_embeddings of the test models


def save_model(folder, config: PLMConfig, tokenizer: PLMTokenizerFast, biases: dict[int, float] | None = None):
    torch.manual_seed(0)
    model = PLMForMaskedLM(config).eval()
    with torch.no_grad():
        for token_id, value in (biases or {}).items():
            model.lm_head.bias[token_id] = value
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny batched matmuls gain nothing from a second thread, and stall badly when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """An untrained rotary model: near-uniform logits, so it would emit special tokens if they were allowed."""
    config = config_from_preset("tiny", max_position_embeddings=CONTEXT)
    return save_model(tmp_path_factory.mktemp("tiny"), config, PLMTokenizerFast())


@pytest.fixture(scope="module")
def glm_folder(tmp_path_factory):
    """An xTrimoPGLM-like model (2-D RoPE, DeepNorm, GeGLU) that ends sequences and spans on its own.

    A large init and an untied head make its predictions depend on the context and positions (at the default init a
    DeepNorm model mostly echoes its input token); the raised <eos>/<eop> biases make ends likely but not certain.
    """
    tokenizer = PLMTokenizerFast()
    shape = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128}
    knobs = {"lm_head_bias": True, "tie_word_embeddings": False, "initializer_range": 0.3}
    config = PLMConfig(**{**XTRIMOPGLM_ARCHITECTURE, **shape, **knobs, "max_position_embeddings": CONTEXT})
    biases = {tokenizer.eos_token_id: 1.0, tokenizer.eop_token_id: 1.0}
    return save_model(tmp_path_factory.mktemp("glm"), config, tokenizer, biases)


@pytest.fixture(scope="module")
def generator(tiny_folder):
    return pipeline("protein-generation", model=str(tiny_folder), device="cpu")


@pytest.fixture(scope="module")
def glm_generator(glm_folder):
    return pipeline("protein-generation", model=str(glm_folder), device="cpu")


@pytest.fixture(scope="module")
def infiller(glm_folder):
    return pipeline("protein-infilling", model=str(glm_folder), device="cpu")


def non_residue_ids(tokenizer, keep: int) -> list[int]:
    """Every token id that is not a residue letter, except `keep` (the stop token)."""
    return [i for i in range(len(tokenizer)) if tokenizer.convert_ids_to_tokens(i) not in RESIDUES and i != keep]


def prompt_ids(tokenizer, prompt: str) -> torch.Tensor:
    return torch.tensor([[tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]])


def reference_generations(model, tokenizer, prompt: str, max_length: int, **generate_kwargs) -> list[dict]:
    """A direct model.generate() with transformers' own options, decoded the documented way."""
    ids = prompt_ids(tokenizer, prompt)
    outputs = model.generate(
        ids,
        max_new_tokens=max_length - len(prompt) + 1,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=non_residue_ids(tokenizer, tokenizer.eos_token_id),
        **generate_kwargs,
    )
    results = []
    for row in outputs[:, ids.shape[1] :].tolist():
        tokens = tokenizer.convert_ids_to_tokens(row)
        finished = "<eos>" in tokens
        generated = "".join(tokens[: tokens.index("<eos>")] if finished else tokens)
        generated = generated.replace("<pad>", "")
        if len(prompt) + len(generated) > max_length:
            generated, finished = generated[: max_length - len(prompt)], False
        results.append({"sequence": prompt + generated, "generated": generated, "finished": finished})
    return results


# ----------------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------------


def test_greedy_pipeline_equals_direct_generate(generator, glm_generator):
    expected = reference_generations(generator.model, generator.tokenizer, "MKTAYIAK", 40, do_sample=False)
    assert generator("MKTAYIAK", max_length=40, do_sample=False) == expected
    # min_length suppresses <eos> exactly as transformers' min_new_tokens does (on a model that likes <eos>).
    model, tokenizer = glm_generator.model, glm_generator.tokenizer
    expected = reference_generations(model, tokenizer, "MKT", 30, do_sample=False, min_new_tokens=17)
    assert glm_generator("MKT", max_length=30, min_length=20, do_sample=False) == expected
    assert expected[0]["finished"] and len(expected[0]["sequence"]) >= 20


def test_seeded_sampling_equals_direct_generate(glm_generator):
    model, tokenizer = glm_generator.model, glm_generator.tokenizer
    options = {"temperature": 0.8, "top_k": 10, "top_p": 0.9, "repetition_penalty": 1.2}
    torch.manual_seed(3)
    expected = reference_generations(model, tokenizer, "MSL", 25, do_sample=True, num_return_sequences=4, **options)
    produced = glm_generator("MSL", max_length=25, num_return_sequences=4, seed=3, **options)
    assert produced == expected
    assert len({result["sequence"] for result in produced}) > 1


def test_batched_prompts_equal_one_by_one(generator, glm_generator):
    prompts = ["MKTAYIAKQRQISFVK", "", "MS", "MKTAYIAKQRQ", "W"]
    for pipe in (generator, glm_generator):
        batched = pipe(prompts, max_length=20, min_length=8, do_sample=False, batch_size=4)
        assert batched == [pipe(prompt, max_length=20, min_length=8, do_sample=False) for prompt in prompts]
    # The shared function gives what the pipeline gives, also split into batches of 2 rows.
    direct = generate_sequences(generator.model, generator.tokenizer, prompts, max_length=20, do_sample=False)
    assert direct == generator(prompts, max_length=20, do_sample=False, batch_size=2)


def test_output_is_residues_only_even_untrained(generator):
    results = generator(num_return_sequences=24, max_length=40, seed=0)
    assert len(results) == 24
    letters = set("".join(result["sequence"] for result in results))
    assert letters <= RESIDUES and len(letters) > 10
    # Without the suppression this untrained model does emit special tokens: the check above can fail.
    tokenizer = generator.tokenizer
    torch.manual_seed(0)
    raw = generator.model.generate(
        prompt_ids(tokenizer, ""), max_new_tokens=40, do_sample=True, num_return_sequences=8, eos_token_id=None
    )
    assert set(raw[:, 1:].flatten().tolist()) & set(tokenizer.all_special_ids) - {tokenizer.eos_token_id}


def test_stops_at_eos_and_finished_flags(glm_generator):
    results = glm_generator(["", "MK"], num_return_sequences=16, max_length=12, seed=0)
    flat = [result for group in results for result in group]
    assert {result["finished"] for result in flat} == {True, False}
    for prompt, group in zip(["", "MK"], results):
        for result in group:
            assert result["sequence"] == prompt + result["generated"]
            # Unfinished means cut at max_length; finished sequences ended earlier or exactly there.
            assert len(result["sequence"]) <= 12
            if not result["finished"]:
                assert len(result["sequence"]) == 12


def test_max_new_tokens_means_what_it_means_in_transformers(generator, glm_generator):
    """New tokens, the closing <eos> included; with max_length the tighter of the two applies."""
    model, tokenizer = generator.model, generator.tokenizer
    ids = prompt_ids(tokenizer, "MKTAYIAK")
    raw = model.generate(
        ids,
        max_new_tokens=5,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=non_residue_ids(tokenizer, tokenizer.eos_token_id),
    )
    tokens = tokenizer.convert_ids_to_tokens(raw[0, ids.shape[1] :].tolist())
    finished = "<eos>" in tokens
    generated = "".join(tokens[: tokens.index("<eos>")] if finished else tokens)
    expected = [{"sequence": "MKTAYIAK" + generated, "generated": generated, "finished": finished}]
    assert generator("MKTAYIAK", max_new_tokens=5, do_sample=False) == expected
    sampled = glm_generator("MK", num_return_sequences=16, max_new_tokens=4, seed=0)
    assert {result["finished"] for result in sampled} == {True, False}
    for result in sampled:
        assert len(result["generated"]) == 4 if not result["finished"] else len(result["generated"]) <= 3
    for result in glm_generator("MK", num_return_sequences=8, max_new_tokens=6, max_length=5, seed=0):
        assert len(result["sequence"]) <= 5


def test_min_and_max_length_in_residues(glm_generator):
    prompts = ["MK", "MKTAYIAKQRQ"]
    results = glm_generator(prompts, num_return_sequences=10, min_length=15, max_length=20, seed=1)
    lengths = [len(result["sequence"]) for group in results for result in group]
    assert min(lengths) >= 15 and max(lengths) <= 20
    assert any(result["finished"] for group in results for result in group)
    unconstrained = glm_generator(prompts, num_return_sequences=10, max_length=20, seed=1)
    assert min(len(result["sequence"]) for group in unconstrained for result in group) < 15


def test_seed_is_reproducible_and_leaves_global_rng_alone(generator):
    state = torch.get_rng_state()
    first = generator("MKT", num_return_sequences=3, max_length=30, seed=7)
    assert torch.equal(state, torch.get_rng_state())
    assert generator("MKT", num_return_sequences=3, max_length=30, seed=7) == first
    assert generator("MKT", num_return_sequences=3, max_length=30, seed=8) != first


def test_top_k_and_repetition_penalty_change_outputs(generator):
    default = generator("MKT", num_return_sequences=4, max_length=40, seed=0)
    top_k = generator("MKT", num_return_sequences=4, max_length=40, seed=0, top_k=2)
    penalised = generator("MKT", num_return_sequences=4, max_length=40, seed=0, repetition_penalty=3.0)
    assert top_k != default and penalised != default
    # top_k=1 sampling is greedy decoding.
    assert generator("MKT", max_length=40, top_k=1, seed=5) == generator("MKT", max_length=40, do_sample=False)
    # The untrained greedy model repeats residues; a strong penalty diversifies the same greedy path.
    greedy = generator("MKT", max_length=40, do_sample=False)[0]["generated"]
    unrepeated = generator("MKT", max_length=40, do_sample=False, repetition_penalty=5.0)[0]["generated"]
    assert len(set(unrepeated)) > len(set(greedy))


def test_generation_errors_are_clear(generator):
    with pytest.raises(ValueError, match=r"'<mask>' at residue position 3"):
        generator("MK<mask>T")
    with pytest.raises(ValueError, match=r"'1' at position 3"):
        generator("MK1T")
    with pytest.raises(ValueError, match="more than max_length=5"):
        generator("MKTAYIAK", max_length=5)
    with pytest.raises(ValueError, match="do_sample=True"):
        generator("MKT", do_sample=False, num_return_sequences=2)
    with pytest.raises(TypeError, match="Unknown option"):
        generator("MKT", max_tokens=5)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        generator("MKT", max_new_tokens=0)


def test_esm_vocabulary_generates_letters_only_and_cannot_infill(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(ESM2_VOCAB) + "\n")  # no GLM tokens; '.' and '-' are tokens, not residues
    tokenizer = PLMTokenizerFast(vocab_file=str(vocab), bos_token="<cls>")
    config = config_from_preset("tiny", vocab_size=len(ESM2_VOCAB), max_position_embeddings=CONTEXT)
    config.bos_token_id, config.pad_token_id, config.eos_token_id = 0, 1, 2
    folder = save_model(tmp_path / "esm", config, tokenizer)
    pipe = pipeline("protein-generation", model=str(folder), device="cpu")
    results = pipe(num_return_sequences=4, max_length=20, seed=0)
    assert set("".join(result["sequence"] for result in results)) <= set("LAGVSERTIDPKQNFYMHWCXBUZO")
    with pytest.raises(ValueError, match="no GLM token"):
        pipeline("protein-infilling", model=str(folder), device="cpu")
    with pytest.raises(ValueError, match="no GLM token"):
        infill_sequences(pipe.model, pipe.tokenizer, "MKT<smask>LV")


# ----------------------------------------------------------------------------------------------------------------------
# GLM infilling
# ----------------------------------------------------------------------------------------------------------------------


def manual_glm_greedy(model, tokenizer, template: str, max_span_length: int) -> list[str]:
    """Uncached greedy GLM infilling, spans left to right in GLMCollator's layout: the reference."""
    context = tokenizer(template)["input_ids"]
    masks = [i for i, t in enumerate(context) if t in (tokenizer.smask_token_id, tokenizer.gmask_token_id)]
    if context[masks[0]] == tokenizer.gmask_token_id:
        context = context[:-1]  # a continuation has no <eos>
    allowed = [tokenizer.convert_tokens_to_ids(letter) for letter in sorted(RESIDUES)] + [tokenizer.eop_token_id]
    ids, positions, blocks = list(context), list(range(len(context))), [0] * len(context)
    spans = []
    for span_number, mask in enumerate(masks):
        ids, positions, blocks = ids + [tokenizer.sop_token_id], positions + [mask], blocks + [1]
        if span_number == 0:  # the first span's inputs are those of the collators' helper
            first = glm_infill_inputs(tokenizer, template)
            assert first["input_ids"][0].tolist() == ids and first["position_ids"][0].tolist() == positions
            assert first["block_position_ids"][0].tolist() == blocks
        span = []
        while len(span) < max_span_length:
            with torch.no_grad():
                logits = model(
                    input_ids=torch.tensor([ids]),
                    position_ids=torch.tensor([positions]),
                    block_position_ids=torch.tensor([blocks]),
                    use_cache=False,
                ).logits[0, -1]
            token = allowed[int(logits[allowed].argmax())]
            if token == tokenizer.eop_token_id:
                break
            span.append(token)
            ids, positions, blocks = ids + [token], positions + [mask], blocks + [blocks[-1] + 1]
        spans.append("".join(tokenizer.convert_ids_to_tokens(span)))
    return spans


@pytest.mark.parametrize(
    "template",
    ["MKTAYIAK<smask>SHFSRQ", "MKTAYIAK<smask>SHFSRQ<smask>EPLEGW<smask>K", "MKTAYIAKQRQ<gmask>"],
)
def test_greedy_infilling_equals_manual_glm_loop(infiller, template):
    expected = manual_glm_greedy(infiller.model, infiller.tokenizer, template, max_span_length=8)
    [result] = infiller(template, max_span_length=8)
    assert result["spans"] == expected
    pieces = template.replace("<gmask>", "<smask>").split("<smask>")
    assert result["sequence"] == "".join(piece + span for piece, span in zip(pieces, [*expected, ""]))
    assert result["finished"] == [len(span) < 8 for span in expected]


def test_infilling_keeps_the_context_and_fills_every_span(infiller):
    template = "MKTAYIAK<smask>SHFSRQ<smask>EPLE"
    results = infiller(template, max_span_length=6, do_sample=True, num_return_sequences=12, seed=0)
    assert len(results) == 12
    for result in results:
        first, second = result["spans"]
        assert result["sequence"] == "MKTAYIAK" + first + "SHFSRQ" + second + "EPLE"
        assert len(first) <= 6 and len(second) <= 6
        assert set(first + second) <= RESIDUES
        for span, finished in zip(result["spans"], result["finished"]):
            assert finished or len(span) == 6
    assert {flag for result in results for flag in result["finished"]} == {True, False}
    assert infiller(template, max_span_length=6, do_sample=True, num_return_sequences=12, seed=0) == results


def test_batched_infilling_equals_one_by_one(infiller):
    templates = ["MKT<smask>LVAYIAK", "MK<smask>AYIAK<smask>SHF<smask>RQ", "MKTAYIAKQRQ<gmask>"]
    batched = infiller(templates, max_span_length=5, batch_size=2)
    assert batched == [infiller(template, max_span_length=5) for template in templates]
    assert [len(results[0]["spans"]) for results in batched] == [1, 3, 1]


def test_infilling_errors_are_clear(infiller):
    with pytest.raises(ValueError, match="has no <smask> or <gmask>"):
        infiller("MKTAYIAK")
    with pytest.raises(ValueError, match=r"'\*' at position 4"):
        infiller("MKT*<smask>LV")
    with pytest.raises(ValueError, match=r"'<mask>' at position 3"):
        infiller("MK<mask>T<smask>LV")
    with pytest.raises(ValueError, match="must be the last token"):
        infiller("MK<gmask>LV")
    with pytest.raises(ValueError, match="must be the last token"):
        infiller("MK<smask>LV<gmask>")
    with pytest.raises(ValueError, match="do_sample=True"):
        infiller("MK<smask>LV", num_return_sequences=3)


# ----------------------------------------------------------------------------------------------------------------------
# plm generate
# ----------------------------------------------------------------------------------------------------------------------


def parse_generate(argv: list[str]) -> argparse.Namespace:
    return add_generate_arguments(argparse.ArgumentParser(prog="plm generate")).parse_args(argv)


def test_cli_generate_writes_fasta(glm_folder, tmp_path):
    output = tmp_path / "out" / "generated.fasta"
    argv = [str(glm_folder), "--prompt", "MKT", "--prompt", "ms", "--num-sequences", "3", "--max-length", "20"]
    assert run_generate(parse_generate([*argv, "--seed", "0", "--batch-size", "4", "-o", str(output)])) == 0
    records = list(read_fasta(output))
    assert [record.id for record in records] == [f"gen_{i}" for i in range(1, 7)]
    for record, prompt in zip(records, ["MKT"] * 3 + ["MS"] * 3):
        assert record.sequence.startswith(prompt) and len(record.sequence) <= 20
        assert set(record.sequence) <= RESIDUES
        finished = record.description.split("finished=")[1]
        assert f"prompt={prompt} " in record.description and finished in ("True", "False")
        assert finished == "True" or len(record.sequence) == 20
    # Same seed, same file.
    again = tmp_path / "again.fasta"
    assert run_generate(parse_generate([*argv, "--seed", "0", "--batch-size", "4", "-o", str(again)])) == 0
    assert again.read_text() == output.read_text()


def test_cli_infill_and_misplaced_options(glm_folder, tmp_path, capsys):
    output = tmp_path / "infilled.fasta"
    argv = [str(glm_folder), "--infill", "MKT<smask>LVAYIAK", "--infill", "MKTAY<gmask>", "--max-span-length", "4"]
    assert run_generate(parse_generate([*argv, "-o", str(output)])) == 0
    records = list(read_fasta(output))
    assert [record.id for record in records] == ["infill_1", "infill_2"]
    assert records[0].sequence.startswith("MKT") and records[0].sequence.endswith("LVAYIAK")
    assert "template=MKT<smask>LVAYIAK spans=" in records[0].description
    assert records[1].sequence.startswith("MKTAY") and len(records[1].sequence) <= 9
    assert main(["generate", str(glm_folder), "--max-span-length", "4"]) == 2
    assert "--max-span-length" in capsys.readouterr().err
    assert main(["generate", str(glm_folder), "--infill", "MKT<smask>L", "--num-sequences", "2"]) == 2
    assert "--sample" in capsys.readouterr().err
    assert main(["generate", str(glm_folder), "--prompt", "MK*T", "-o", str(tmp_path / "x.fa")]) == 2
    assert "Invalid residue '*' at position 3" in capsys.readouterr().err and not (tmp_path / "x.fa").exists()
    with pytest.raises(SystemExit):
        parse_generate([str(glm_folder), "--prompt", "MKT", "--infill", "MK<smask>T"])
