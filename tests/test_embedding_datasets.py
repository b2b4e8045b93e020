"""The pipelines take `datasets` inputs as transformers' own do: `KeyDataset(ds, "sequence")` (a torch Dataset,
indexable but not iterable) and a dataset column `ds["sequence"]` (a lazy `Column` in datasets >= 4), with the
results of the same sequences given as a plain list."""

import numpy as np
import pytest
import torch
from transformers import pipeline
from transformers.pipelines.pt_utils import KeyDataset

from modeling_plm import PLMForMaskedLM, PLMTokenizerFast, config_from_preset
from modeling_plm.inference.embedding import embed_sequences

from .conftest import optional_module


@pytest.fixture(scope="module")
def model_and_tokenizer():
    torch.manual_seed(0)
    return PLMForMaskedLM(config_from_preset("tiny")).eval(), PLMTokenizerFast()


@pytest.fixture(scope="module")
def dataset(swissprot_sequences):
    datasets = optional_module("datasets")
    sequences = swissprot_sequences[:7]
    return datasets.Dataset.from_dict({"id": [f"seq{i}" for i in range(7)], "sequence": sequences})


def assert_same_embeddings(got, want, atol: float = 0.0) -> None:
    got = list(got)
    assert len(got) == len(want)
    for mine, theirs in zip(got, want):
        assert mine.keys() == theirs.keys()
        for name in mine:
            np.testing.assert_allclose(mine[name], theirs[name], rtol=0, atol=atol)


@pytest.mark.parametrize("wrap", ["key_dataset", "column"])
def test_embedding_pipeline_and_engine_take_key_dataset_and_columns(model_and_tokenizer, dataset, wrap):
    model, tokenizer = model_and_tokenizer
    inputs = KeyDataset(dataset, "sequence") if wrap == "key_dataset" else dataset["sequence"]
    plain = list(dataset.to_dict()["sequence"])
    options = {"pooling": ["mean", "bos"], "per_residue": True}
    embedder = pipeline("protein-embedding", model=model, tokenizer=tokenizer, **options)
    want = embedder(plain)
    assert isinstance(want, list) and len(want) == 7 and want[3]["residues"].shape[0] == len(plain[3])
    assert not isinstance(embedder(inputs), list)  # an iterator, as transformers' pipelines give for a dataset
    assert_same_embeddings(embedder(inputs), want)
    assert_same_embeddings(embed_sequences(model, tokenizer, inputs, **options), want)
    # Chunks of 3 batch the sequences differently: the same up to float error.
    assert_same_embeddings(embedder(inputs, chunk_size=3), want, atol=1e-5)


def test_a_dataset_itself_is_refused_with_the_way_to_pass_a_column(model_and_tokenizer, dataset):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(TypeError, match=r"sequence 0 is a dict \(a dataset row\?\).*KeyDataset.*\['id', 'sequence'\]"):
        embed_sequences(model, tokenizer, dataset)
    embedder = pipeline("protein-embedding", model=model, tokenizer=tokenizer)
    with pytest.raises(TypeError, match="protein-embedding takes a str, a list of str, a dataset column or KeyDataset"):
        embedder(42)


@pytest.mark.parametrize("wrap", ["key_dataset", "column"])
def test_scoring_pipeline_takes_key_dataset_and_columns(model_and_tokenizer, dataset, wrap):
    model, tokenizer = model_and_tokenizer
    short = dataset.map(lambda row: {"sequence": row["sequence"][:15]})
    inputs = KeyDataset(short, "sequence") if wrap == "key_dataset" else short["sequence"]
    scorer = pipeline("protein-scoring", model=model, tokenizer=tokenizer)
    want = scorer(list(short.to_dict()["sequence"]), score="pseudo-log-likelihood")
    assert scorer(inputs, score="pseudo-log-likelihood") == want
