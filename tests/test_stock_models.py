"""The embedding engine and pipeline take transformers' own protein encoders as they are (ESM-2 here; ESM C and T5
in their family tests), with the same numbers as their converted copies."""

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer, EsmConfig, EsmForMaskedLM, EsmModel, EsmTokenizer, pipeline

from modeling_plm.hub.convert import ESM2_VOCAB, convert_esm2
from modeling_plm.inference.embedding import embed_fasta, embed_sequences, special_token_layout

OPTIONS = {"layers": [0, 1, -1], "pooling": ["mean", "max", "bos"], "per_residue": True}


def assert_same_embeddings(got: list[dict], want: list[dict], atol: float) -> None:
    assert len(got) == len(want)
    for mine, theirs in zip(got, want):
        assert mine.keys() == theirs.keys()
        for key in mine:
            np.testing.assert_allclose(mine[key], theirs[key], atol=atol, rtol=0)


@pytest.fixture(scope="module")
def esm_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("stock_esm")
    config = EsmConfig(
        vocab_size=33,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        pad_token_id=1,
        mask_token_id=32,
        position_embedding_type="rotary",
        token_dropout=True,
        max_position_embeddings=1026,
    )
    model = EsmForMaskedLM(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    model.save_pretrained(root / "esm")
    (root / "esm" / "vocab.txt").write_text("\n".join(ESM2_VOCAB) + "\n")
    convert_esm2(root / "esm", root / "plm")
    return root / "esm", root / "plm"


def test_stock_esm_embeds_as_its_converted_copy(esm_folders, swissprot_sequences):
    esm_folder, plm_folder = esm_folders
    sequences = swissprot_sequences[:6]
    stock = embed_sequences(
        EsmModel.from_pretrained(esm_folder), EsmTokenizer.from_pretrained(esm_folder), sequences, **OPTIONS
    )
    converted = embed_sequences(
        AutoModel.from_pretrained(plm_folder), AutoTokenizer.from_pretrained(plm_folder), sequences, **OPTIONS
    )
    assert_same_embeddings(stock, converted, atol=1e-5)
    # The masked-LM class embeds through its base model.
    assert_same_embeddings(
        embed_sequences(
            EsmForMaskedLM.from_pretrained(esm_folder), EsmTokenizer.from_pretrained(esm_folder), sequences, **OPTIONS
        ),
        converted,
        atol=1e-5,
    )


def test_stock_esm_in_the_pipeline_and_windowed(esm_folders, swissprot_sequences):
    esm_folder, plm_folder = esm_folders
    long_sequence = max(swissprot_sequences, key=len)
    embedder = pipeline(
        "protein-embedding",
        model=EsmModel.from_pretrained(esm_folder),
        tokenizer=EsmTokenizer.from_pretrained(esm_folder),
    )
    ours = pipeline("protein-embedding", model=str(plm_folder))
    for options in ({"pooling": "mean"}, {"pooling": "mean", "window": 30, "stride": 10, "per_residue": True}):
        got, want = embedder([long_sequence], **options), ours([long_sequence], **options)
        assert_same_embeddings(got, want, atol=1e-5)


def test_special_token_layouts_are_read_from_the_tokenizer(esm_folders):
    esm_folder, plm_folder = esm_folders
    assert special_token_layout(EsmTokenizer.from_pretrained(esm_folder)) == ([0], [2])
    assert special_token_layout(AutoTokenizer.from_pretrained(plm_folder)) == ([0], [2])


def test_other_models_and_bulk_embedding_are_refused_with_a_reason(esm_folders, tmp_path):
    esm_folder, _ = esm_folders
    tokenizer = EsmTokenizer.from_pretrained(esm_folder)
    with pytest.raises(TypeError, match="EsmModel, EsmcModel or T5EncoderModel"):
        embed_sequences(torch.nn.Linear(2, 2), tokenizer, ["MKT"])
    fasta = tmp_path / "a.fasta"
    fasta.write_text(">a\nMKT\n")
    with pytest.raises(TypeError, match="modeling_plm model"):
        embed_fasta(EsmModel.from_pretrained(esm_folder), tokenizer, fasta, tmp_path / "out")


def test_stock_esmc_embeds_as_its_converted_copy(tmp_path, swissprot_sequences):
    pytest.importorskip("transformers.models.esmc", reason="ESM C is in transformers >= 5.24")
    from transformers import EsmcTokenizer

    from modeling_plm.hub.converters.esmc import convert_esmc
    from tests.test_family_esmc import build_esmc, save_esmc

    oracle = build_esmc("small")
    folder = convert_esmc(save_esmc(oracle, tmp_path / "esmc"), tmp_path / "plm")
    sequences = swissprot_sequences[:6]
    stock = embed_sequences(oracle.esmc, EsmcTokenizer(), sequences, **OPTIONS)
    converted = embed_sequences(
        AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), sequences, **OPTIONS
    )
    assert_same_embeddings(stock, converted, atol=1e-5)


@pytest.mark.parametrize("shape", ["prott5_small", "ankh_small"])
def test_stock_t5_encoders_embed_as_their_converted_copies(shape, tmp_path, swissprot_sequences):
    from modeling_plm.hub.converters.t5 import convert_t5
    from tests.test_family_t5 import build_t5, save_t5, source_tokenizer

    oracle = build_t5(shape)
    folder = convert_t5(save_t5(oracle, tmp_path / "t5", shape), tmp_path / "plm")
    options = {**OPTIONS, "pooling": ["mean", "max"]}  # T5 puts no token before the residues
    sequences = swissprot_sequences[:6]
    stock = embed_sequences(oracle, source_tokenizer(shape), sequences, **options)
    converted = embed_sequences(
        AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), sequences, **options
    )
    assert_same_embeddings(stock, converted, atol=1e-5)
    assert special_token_layout(source_tokenizer(shape)) == ([], [1])
    with pytest.raises(ValueError, match="pooling 'bos' needs"):
        embed_sequences(oracle, source_tokenizer(shape), sequences, pooling="bos")
