"""`plm export`: a tiny trained model becomes a complete hub folder whose card, remote code and offline loading work."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoTokenizer

from modeling_plm import PLMForMaskedLM, PLMTokenizerFast, config_from_preset
from modeling_plm.hub.export import ExportError, check_auto_map, export_checkpoint, read_eval_results
from modeling_plm.modeling_plm import AUTO_MAP
from modeling_plm.training.trainer import PretrainConfig, pretrain

from .conftest import data_path

SPROT = "swissprot2014/sprot2014_sample50k_seed0.fasta.gz"
REPO_ID = "owner/plm-tiny"
EVAL_RESULTS = [
    {"task": "fill-mask", "dataset": "test-proteins", "metric": "accuracy", "value": 0.125, "dataset_split": "test"}
]

LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch

    class BlockModelingPlm:  # simulate an environment where the package is not installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "modeling_plm":
                raise ModuleNotFoundError("modeling_plm is not installed here")

    sys.meta_path.insert(0, BlockModelingPlm())
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    sequence, sources = sys.argv[1], sys.argv[2:]
    result = {}
    for source in sources:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=True)
        model = AutoModelForMaskedLM.from_pretrained(source, trust_remote_code=True).eval()
        with torch.no_grad():
            logits = model(**tokenizer([sequence], return_tensors="pt")).logits
        result[source] = {"module": type(model).__module__, "logits": logits.tolist()}
    print(json.dumps(result))
    """
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    config = PretrainConfig(
        preset="tiny",
        objective="mlm",
        train_file=[str(data_path(SPROT))],
        valid_fraction=0.01,
        valid_sequences=16,
        crop_length=62,
        batch_size=4,
        max_steps=4,
        log_steps=2,
        eval_steps=4,
        save_steps=4,
        output_dir=str(run / "run"),
        report_to="none",
        shuffle_buffer=200,
    )
    return pretrain(config)


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eval") / "results.json"
    path.write_text(json.dumps(EVAL_RESULTS))
    return path


@pytest.fixture(scope="module")
def exported(trained, eval_file, tmp_path_factory) -> Path:
    return export_checkpoint(
        trained, tmp_path_factory.mktemp("export") / "hub", repo_id=REPO_ID, eval_results=eval_file
    )


@pytest.fixture(scope="module")
def sharded(trained, tmp_path_factory) -> Path:
    return export_checkpoint(trained, tmp_path_factory.mktemp("export") / "sharded", max_shard_size="50KB")


@pytest.fixture(scope="module")
def record(trained) -> dict:
    return json.loads((trained / "training_record.json").read_text())


def reference_logits(checkpoint: Path, sequence: str) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForMaskedLM.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        return model(**tokenizer([sequence], return_tensors="pt")).logits


def assert_auto_map_resolves(folder: Path, auto_map: dict) -> None:
    for reference in auto_map.values():
        for ref in [r for r in reference if r] if isinstance(reference, list) else [reference]:
            module, _, class_name = ref.rpartition(".")
            tree = ast.parse((folder / f"{module}.py").read_text())
            assert class_name in {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}, ref


def table_value(text: str, label: str) -> str:
    match = re.search(rf"^\| {re.escape(label)} \| ([^|]+) \|", text, flags=re.MULTILINE)
    assert match, f"row {label!r} not in the card"
    return match.group(1).strip()


def as_int(value: str) -> int:
    """'1,234 (1.234e+03)' or '1,234' -> 1234."""
    return int(value.split(" ")[0].replace(",", ""))


def test_exported_folder_is_complete(exported, trained):
    names = {path.name for path in exported.iterdir()}
    expected = {
        "model.safetensors",
        "config.json",
        "configuration_plm.py",
        "modeling_plm.py",
        "modeling_plm_layers.py",
        "tokenization_plm.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "README.md",
        "training_record.json",
        "eval_results.json",
    }
    assert expected <= names
    assert not [name for name in names if name.endswith((".bin", ".pt", ".pkl"))]
    config = json.loads((exported / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP
    assert "custom_pipelines" not in config  # the pipelines are not self-contained files: not faked
    assert_auto_map_resolves(exported, config["auto_map"])
    tokenizer_config = json.loads((exported / "tokenizer_config.json").read_text())
    assert tokenizer_config["auto_map"]["AutoTokenizer"][1] == "tokenization_plm.PLMTokenizerFast"
    assert_auto_map_resolves(exported, tokenizer_config["auto_map"])
    generation = json.loads((exported / "generation_config.json").read_text())
    tokenizer = PLMTokenizerFast.from_pretrained(trained)
    assert (generation["bos_token_id"], generation["eos_token_id"], generation["pad_token_id"]) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert generation["max_length"] == config["max_position_embeddings"]
    assert generation["do_sample"] is True
    # Same tensors as the checkpoint.
    original, copied = load_file(trained / "model.safetensors"), load_file(exported / "model.safetensors")
    assert original.keys() == copied.keys()
    assert all(torch.equal(original[name], copied[name]) for name in original)


def test_sharded_export_has_an_index_and_its_shards(sharded):
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1
    assert not (sharded / "model.safetensors").exists()
    assert all((sharded / shard).is_file() for shard in shards)


def test_card_metadata_parses(exported, record):
    card = ModelCard.load(exported / "README.md")
    data = card.data
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "fill-mask"  # MLM-trained
    assert isinstance(data.tags, list)
    assert {"protein", "biology", "protein-language-model", "mlm"} <= set(data.tags)
    assert isinstance(data.license, str) and data.license == "apache-2.0"
    assert data.datasets == [source["name"] for source in record["data"]["train"]]
    assert data.base_model is None  # trained from scratch
    model_index = data.to_dict()["model-index"]
    assert model_index[0]["name"] == "plm-tiny" and isinstance(model_index[0]["results"], list)
    given = [r for r in data.eval_results if r.dataset_type == "test-proteins"]
    assert len(given) == 1 and given[0].metric_value == 0.125 and given[0].dataset_split == "test"
    # The run's own validation numbers, named as a held-out split of the training source.
    validation = {r.metric_name: r.metric_value for r in data.eval_results if r.dataset_split == "validation"}
    assert validation["mlm perplexity"] == record["final_eval"]["mlm"]["perplexity"]
    assert validation["mlm loss"] == record["final_eval"]["mlm"]["loss"]
    names = {r.dataset_name for r in data.eval_results if r.dataset_split == "validation"}
    assert names == {f"held-out split (1.00% of the training records) of {record['data']['train'][0]['name']}"}


def test_card_numbers_equal_the_checkpoint(exported, trained, record):
    text = (exported / "README.md").read_text()
    model = AutoModelForMaskedLM.from_pretrained(trained)
    config = model.config
    assert as_int(table_value(text, "Layers")) == config.num_hidden_layers
    assert as_int(table_value(text, "Hidden size")) == config.hidden_size
    assert as_int(table_value(text, "Attention heads")) == config.num_attention_heads
    assert as_int(table_value(text, "Key/value heads")) == config.num_key_value_heads
    assert as_int(table_value(text, "Context (tokens, incl. `<bos>`/`<eos>`)")) == config.max_position_embeddings
    assert (
        as_int(table_value(text, "Parameters (this checkpoint, incl. embeddings and head)")) == model.num_parameters()
    )
    assert as_int(table_value(text, "Parameters (backbone incl. token embeddings)")) == record["parameters"]
    assert as_int(table_value(text, "Non-embedding parameters (N)")) == record["non_embedding_parameters"]
    assert as_int(table_value(text, "Training tokens D")) == record["tokens"]
    assert as_int(table_value(text, "Training compute C = 6·N·D")) == round(record["flops_6nd"])
    assert as_int(table_value(text, "Training compute, exact (attention and LM head included)")) == round(
        record["flops"]
    )
    ratio = float(table_value(text, "Tokens per non-embedding parameter D/N"))
    assert ratio == pytest.approx(record["tokens"] / record["non_embedding_parameters"], rel=1e-3)
    assert f"| 1 | mlm | {record['steps']:,} | {record['tokens']:,} |" in text
    assert f"| mlm | {record['final_eval']['mlm']['loss']:.4f} |" in text
    assert "N_opt ∝ C^0.760" in text and "= 1.36e-07·C^0.760" in text
    assert 'from_pretrained("owner/plm-tiny", trust_remote_code=True)' in text
    for section in ("Architecture", "Objectives", "Training data", "Compute", "Evaluation", "How to use", "Citation"):
        assert f"\n## {section}\n" in text


def test_remote_code_loads_give_identical_logits(exported, sharded, trained, swissprot_sequences, tmp_path):
    sequence = swissprot_sequences[0]
    completed = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, sequence, str(exported), str(sharded)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    expected = reference_logits(trained, sequence)
    for folder in (exported, sharded):
        assert result[str(folder)]["module"].startswith("transformers_modules.")
        torch.testing.assert_close(torch.tensor(result[str(folder)]["logits"]), expected, atol=0, rtol=0)


def test_offline_load_by_repo_id_from_the_hub_cache(exported, trained, swissprot_sequences, tmp_path):
    revision = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "cache" / "models--owner--plm-tiny"
    shutil.copytree(exported, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path)}
    sequence = swissprot_sequences[1]
    completed = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, sequence, REPO_ID],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    expected = reference_logits(trained, sequence)
    torch.testing.assert_close(torch.tensor(result[REPO_ID]["logits"]), expected, atol=0, rtol=0)


def test_corrupt_or_missing_shard_is_named(sharded, tmp_path):
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    corrupt = shutil.copytree(sharded, tmp_path / "corrupt")
    data = (corrupt / shard).read_bytes()
    (corrupt / shard).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{re.escape(shard)} is truncated or corrupt"):
        export_checkpoint(corrupt, tmp_path / "out1")
    missing = shutil.copytree(sharded, tmp_path / "missing")
    (missing / shard).unlink()
    with pytest.raises(ValueError, match=rf"missing weights file .*{re.escape(shard)}"):
        export_checkpoint(missing, tmp_path / "out2")
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()


def test_missing_tokenizer_pickled_weights_and_missing_folder_are_refused(trained, tmp_path):
    no_tokenizer = shutil.copytree(trained, tmp_path / "no_tokenizer")
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(ExportError, match="tokenizer file tokenizer.json is missing"):
        export_checkpoint(no_tokenizer, tmp_path / "out1")
    pickled = shutil.copytree(trained, tmp_path / "pickled")
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"holds only pytorch_model.bin: pickled weights are refused"):
        export_checkpoint(pickled, tmp_path / "out2")
    with pytest.raises(ExportError, match="does not exist"):
        export_checkpoint(tmp_path / "nowhere", tmp_path / "out3")
    with pytest.raises(ExportError, match="not empty"):
        export_checkpoint(trained, no_tokenizer.parent)


def test_push_without_a_token_fails_before_any_work(trained, tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from modeling_plm.cli import main
        sys.exit(main(["export", *sys.argv[1:]]))
        """
    )
    env = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update({"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"})
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, "-c", script, str(trained), str(out), "--push", REPO_ID],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "plm export: error: no Hugging Face token" in completed.stderr
    assert not out.exists()


def test_converted_checkpoint_card_names_its_base_model(tmp_path):
    folder = tmp_path / "converted"
    PLMForMaskedLM(config_from_preset("tiny", max_position_embeddings=130)).eval().save_pretrained(folder)
    PLMTokenizerFast().save_pretrained(folder)
    conversion = {"converted_from": "esm2", "source": "/x/esm2", "base_model": "facebook/esm2_t6_8M_UR50D"}
    (folder / "conversion.json").write_text(json.dumps(conversion))
    out = export_checkpoint(folder, tmp_path / "out", datasets=["uniref50"])
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == "facebook/esm2_t6_8M_UR50D"
    assert card.data.datasets == ["uniref50"] and card.data.pipeline_tag == "fill-mask"
    assert getattr(card.data, "eval_results", None) is None
    assert "not trained by modeling_plm" in card.text
    assert as_int(table_value(card.text, "Context (tokens, incl. `<bos>`/`<eos>`)")) == 130
    assert (out / "conversion.json").is_file()


def test_auto_map_and_eval_results_are_validated(exported, tmp_path):
    with pytest.raises(ExportError, match="defines no such class"):
        check_auto_map(exported, {"AutoModel": "modeling_plm.PLMNoSuchModel"}, {"AutoModel"}, "config.json")
    with pytest.raises(ExportError, match="other_file.py is not in"):
        check_auto_map(exported, {"AutoModel": "other_file.PLMModel"}, {"AutoModel"}, "config.json")
    with pytest.raises(ExportError, match=r"auto_map lacks \['AutoModelForCausalLM'\]"):
        check_auto_map(exported, {"AutoModel": "modeling_plm.PLMModel"}, {"AutoModel", "AutoModelForCausalLM"}, "x")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"task": "fill-mask", "dataset": "d", "metric": "accuracy"}]))
    with pytest.raises(ExportError, match=r"entry 0 lacks \['value'\]"):
        read_eval_results(bad)
