"""FLOPs accounting against hand counts and against the real modules."""

import pytest

from modeling_plm import PLMConfig, PLMModel
from modeling_plm.training.flops import (
    attended_pairs,
    dense_forward_flops_per_token,
    flops_6nd,
    non_embedding_parameters,
    training_flops,
)

SMALL = dict(vocab_size=10, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16)


def test_non_embedding_parameters_equal_the_real_module_count():
    for overrides in (
        {},
        {
            "mlp_type": "glu",
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "norm_type": "rmsnorm",
            "num_key_value_heads": 1,
        },
    ):
        config = PLMConfig(**SMALL, **overrides)
        model = PLMModel(config)
        counted = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("embeddings."))
        assert non_embedding_parameters(config) == counted


def test_hand_count_for_a_small_config():
    config = PLMConfig(**SMALL)
    # per layer: projections 2*(8*8 + 2*8*8 + 8*8) = 512, MLP 2*8*16*2 = 512; LM head 2*8*10 + transform 2*8*8 = 288
    assert dense_forward_flops_per_token(config) == 2 * (512 + 512) + 288
    # attention per (query, key) pair: layers 2 x (scores + values) 2 x 2 FLOPs x heads 2 x head_dim 4 = 64
    assert training_flops(config, [5], "bidirectional") == 3 * (5 * 2336 + 25 * 64)
    assert training_flops(config, [5], "causal") == 3 * (5 * 2336 + 15 * 64)
    # two sequences are counted separately: no cross-sequence pairs in a packed row
    assert training_flops(config, [2, 3], "bidirectional") == 3 * (5 * 2336 + (4 + 9) * 64)
    # 1216 non-embedding parameters: attention 288 (with biases), MLP 280, 2 LayerNorms 32 per layer; final norm 16
    assert non_embedding_parameters(config) == 1216
    assert flops_6nd(config, 1000) == 6 * 1216 * 1000


def test_glm_pairs_are_between_causal_and_bidirectional():
    assert attended_pairs(10, "glm", context_length=10) == attended_pairs(10, "bidirectional")
    # context 6 bidirectional (36) + 4 span tokens seeing the context (24) and the span causally (10)
    assert attended_pairs(10, "glm", context_length=6) == 36 + 24 + 10
    with pytest.raises(ValueError):
        attended_pairs(3, "sideways")


def test_six_n_d_approaches_the_exact_count_for_long_context_free_models():
    """For a wide model and short sequences, attention is a small share: exact ≈ 6ND + head."""
    config = PLMConfig(vocab_size=34, hidden_size=1024, num_hidden_layers=4, num_attention_heads=16)
    exact = training_flops(config, [64] * 8, "bidirectional")
    approx = flops_6nd(config, 64 * 8)
    assert 1.0 < exact / approx < 1.05


def test_trainer_logs_the_same_flops_as_the_counter(tmp_path):
    """A short real pretrain on sequences of one length: every logged row's flops_6nd and exact flops equal the
    counter's values for the steps taken, and the training record's totals equal the last row."""
    import json
    import random

    from modeling_plm.training.presets import config_from_preset
    from modeling_plm.training.trainer import PretrainConfig, pretrain

    rng = random.Random(0)
    length, batch, steps = 30, 4, 6
    fasta = tmp_path / "fixed.fasta"
    fasta.write_text(
        "".join(f">s{i}\n{''.join(rng.choice('ACDEFGHIKLMNPQRSTVWY') for _ in range(length))}\n" for i in range(200))
    )
    config = PretrainConfig(
        preset="tiny",
        train_file=[str(fasta)],
        valid_fraction=0.05,
        valid_sequences=8,
        crop_length=64,
        batch_size=batch,
        max_steps=steps,
        log_steps=2,
        eval_steps=steps,
        save_steps=steps,
        output_dir=str(tmp_path / "run"),
        report_to="none",
        shuffle_buffer=50,
    )
    final = pretrain(config)
    model_config = config_from_preset("tiny")
    per_step_tokens = batch * (length + 2)  # <bos> residues <eos>, no padding: every sequence has one length
    per_step_exact = training_flops(model_config, [length + 2] * batch, "bidirectional")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [row for row in rows if "flops" in row]
    assert [row["step"] for row in train_rows] == [2, 4, 6]
    for row in train_rows:
        assert row["tokens"] == row["step"] * per_step_tokens
        assert row["non_embedding_parameters"] == non_embedding_parameters(model_config)
        assert row["flops_6nd"] == pytest.approx(flops_6nd(model_config, row["tokens"]), rel=1e-12)
        assert row["flops"] == pytest.approx(row["step"] * per_step_exact, rel=1e-12)
    record = json.loads((final / "training_record.json").read_text())
    assert record["tokens"] == train_rows[-1]["tokens"]
    assert record["flops"] == pytest.approx(train_rows[-1]["flops"], rel=1e-12)
    assert record["flops_6nd"] == pytest.approx(6 * record["non_embedding_parameters"] * record["tokens"], rel=1e-12)


def test_packed_sequence_lengths_come_from_the_batch_metadata():
    """Packed rows with `cu_seq_lens_q` (transformers' flattening convention, over the flattened rows): the
    boundaries are read, not recomputed from position restarts."""
    import torch

    from modeling_plm.training.trainer import batch_sequence_lengths

    pad = 0
    input_ids = torch.tensor([[5, 6, 7, 5, 6, 7, 8, pad], [5, 6, 7, 8, 9, pad, pad, pad]])
    restarts = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 0], [0, 1, 2, 3, 4, 0, 0, 0]])
    with pytest.raises(ValueError, match="cu_seq_lens_q"):  # packed rows without their boundaries: not guessed
        batch_sequence_lengths({"input_ids": input_ids, "position_ids": restarts}, pad)
    with_metadata = {
        "input_ids": input_ids,
        "position_ids": torch.arange(8).expand(2, 8),  # no restarts: only the metadata marks the boundaries
        "cu_seq_lens_q": torch.tensor([0, 3, 7, 8, 13, 16], dtype=torch.int32),  # each row's padding a segment
    }
    assert batch_sequence_lengths(with_metadata, pad) == ([3, 4, 5], None)
