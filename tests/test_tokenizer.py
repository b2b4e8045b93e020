"""Tests for the residue-level tokenizer (modeling_plm.tokenization_plm) and its build script."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from transformers import AutoTokenizer

from modeling_plm import tokenization_plm
from modeling_plm.tokenization_plm import PLMTokenizerFast, build_backend_tokenizer, read_vocab_file, special_tokens_of

REPO_ROOT = Path(__file__).resolve().parents[1]
VOCAB_PATH = REPO_ROOT / "tokenizer" / "vocab.txt"
BUILD_SCRIPT = REPO_ROOT / "tokenizer" / "build_tokenizer.py"

EXPECTED_VOCAB = [
    *("<pad>", "<bos>", "<eos>", "<unk>", "<mask>", "<gmask>", "<smask>", "<sop>", "<eop>"),
    *"ACDEFGHIKLMNPQRSTVWY",
    *"XBZUO",
]
ESM_VOCAB = [
    *("<cls>", "<pad>", "<eos>", "<unk>"),
    *"LAGVSERTIDPKQNFYMHWCXBUZO.-",
    *("<null_1>", "<mask>"),
]
VALID_RESIDUES = "ACDEFGHIKLMNPQRSTVWYXBZUO"

UBIQUITIN = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"
INSULIN_B = "FVNQHLCGSHLVEALYLVCGERGFFYTPKT"
GFP_START = "MSKGEELFTGVVPILVELDGDVNGHKFSVSGEGEGDATYGKLTLKFICTTGKLPVPWPTLVTTFSYGVQCFSRYPDHMKQHDFFKSAMPEGYVQ"
AMBIGUOUS = "MKXBZUOAC"  # the non-standard residues X B Z U O
SEQUENCES = [UBIQUITIN, INSULIN_B, GFP_START, AMBIGUOUS]


def invalid_message(character: str, position: int, location: str = "") -> str:
    return (
        f"Invalid residue {character!r} at position {position}{location}: expected one of {VALID_RESIDUES} or a "
        "special token like <mask>. Pass invalid_residues='X' to map such characters to X, or 'drop' to remove them."
    )


@pytest.fixture(scope="module")
def tokenizer() -> PLMTokenizerFast:
    return PLMTokenizerFast()


@pytest.fixture()
def esm_vocab_file(tmp_path: Path) -> Path:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(ESM_VOCAB) + "\n", encoding="utf-8")
    return path


def load_build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_tokenizer", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vocab_file_defines_the_34_tokens_in_order() -> None:
    assert read_vocab_file(VOCAB_PATH) == EXPECTED_VOCAB
    assert special_tokens_of(EXPECTED_VOCAB) == EXPECTED_VOCAB[:9]


def test_default_tokenizer_vocabulary_and_special_token_ids(tokenizer: PLMTokenizerFast) -> None:
    assert len(tokenizer) == 34
    assert tokenizer.vocab_size == 34
    assert tokenizer.get_vocab() == {token: index for index, token in enumerate(EXPECTED_VOCAB)}
    named = {
        "pad": (tokenizer.pad_token, tokenizer.pad_token_id),
        "bos": (tokenizer.bos_token, tokenizer.bos_token_id),
        "eos": (tokenizer.eos_token, tokenizer.eos_token_id),
        "unk": (tokenizer.unk_token, tokenizer.unk_token_id),
        "mask": (tokenizer.mask_token, tokenizer.mask_token_id),
        "gmask": (tokenizer.gmask_token, tokenizer.gmask_token_id),
        "smask": (tokenizer.smask_token, tokenizer.smask_token_id),
        "sop": (tokenizer.sop_token, tokenizer.sop_token_id),
        "eop": (tokenizer.eop_token, tokenizer.eop_token_id),
    }
    assert named == {name: (f"<{name}>", index) for index, name in enumerate(named)}
    assert sorted(tokenizer.all_special_ids) == list(range(9))
    assert tokenizer.padding_side == "right"
    assert tokenizer.model_input_names == ["input_ids", "attention_mask"]


def test_default_tokenizer_equals_one_built_from_vocab_txt(tokenizer: PLMTokenizerFast) -> None:
    rebuilt = PLMTokenizerFast(vocab_file=VOCAB_PATH)
    batch = [*SEQUENCES, "MKT<smask>LV<mask>"]
    assert rebuilt(batch)["input_ids"] == tokenizer(batch)["input_ids"]


@pytest.mark.parametrize("sequence", SEQUENCES)
def test_encode_adds_bos_eos_and_decode_round_trips(tokenizer: PLMTokenizerFast, sequence: str) -> None:
    ids = tokenizer(sequence)["input_ids"]
    assert ids == [1, *(EXPECTED_VOCAB.index(residue) for residue in sequence), 2]
    assert tokenizer.encode(sequence) == ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == sequence
    assert tokenizer.decode(ids) == f"<bos>{sequence}<eos>"


def test_batch_decode_and_pairs(tokenizer: PLMTokenizerFast) -> None:
    batch = tokenizer(SEQUENCES, padding=True)["input_ids"]
    assert tokenizer.batch_decode(batch, skip_special_tokens=True) == SEQUENCES
    pair = tokenizer("MKT", "AC")["input_ids"]
    assert pair == [1, 19, 17, 25, 2, 9, 10, 2]


def test_skip_special_tokens_removes_glm_tokens(tokenizer: PLMTokenizerFast) -> None:
    ids = tokenizer("MK<gmask><smask>T<sop>A<eop><mask>")["input_ids"]
    assert ids == [1, 19, 17, 5, 6, 25, 7, 9, 8, 4, 2]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "MKTA"


def test_lower_case_is_upper_cased_and_whitespace_ignored(tokenizer: PLMTokenizerFast) -> None:
    expected = tokenizer("MKTAYIAK")["input_ids"]
    assert tokenizer("mkt ay\nIak\t ")["input_ids"] == expected
    assert tokenizer.tokenize(" m K\tt ") == ["M", "K", "T"]


def test_special_token_inside_raw_text_is_one_token(tokenizer: PLMTokenizerFast) -> None:
    assert tokenizer.tokenize("MKT<smask>LV") == ["M", "K", "T", "<smask>", "L", "V"]
    ids = tokenizer("mkt<smask>lv")["input_ids"]
    assert ids == [1, 19, 17, 25, 6, 18, 26, 2]
    assert ids.count(tokenizer.smask_token_id) == 1


def test_invalid_residue_error_single_sequence(tokenizer: PLMTokenizerFast) -> None:
    # Position is 1-based in the raw input, so the space counts.
    with pytest.raises(ValueError) as error:
        tokenizer("MK T*AC")
    assert str(error.value) == invalid_message("*", 5)


def test_invalid_residue_error_names_sequence_in_batch(tokenizer: PLMTokenizerFast) -> None:
    batch = [UBIQUITIN, INSULIN_B, GFP_START, UBIQUITIN[:56] + "*" + UBIQUITIN[56:]]
    with pytest.raises(ValueError) as error:
        tokenizer(batch, padding=True)
    message = str(error.value)
    assert message == invalid_message("*", 57, " of sequence 3")
    assert message.startswith("Invalid residue '*' at position 57 of sequence 3: expected one of ")


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda tok: tok.encode("MKJ"), invalid_message("J", 3)),
        (lambda tok: tok.tokenize("12"), invalid_message("1", 1)),
        (lambda tok: tok("MK", "A-C"), invalid_message("-", 2, " of text_pair")),
        (lambda tok: tok(["MK", "AC"], ["AC", "M.K"]), invalid_message(".", 2, " of sequence 1 of text_pair")),
        (lambda tok: tok([("MK", "AC"), ("M<K", "AC")]), invalid_message("<", 2, " of sequence 1")),
        (lambda tok: tok(["MK", "T#"], is_split_into_words=True), invalid_message("#", 4)),
        (
            lambda tok: tok([["MK"], ["AC", "D", "E9"]], is_split_into_words=True),
            invalid_message("9", 5, " of sequence 1"),
        ),
        (lambda tok: tok(text_target="MK<MASK>"), invalid_message("<", 3)),
    ],
)
def test_invalid_residue_error_on_every_entry_point(
    tokenizer: PLMTokenizerFast, call: Callable[[PLMTokenizerFast], object], expected: str
) -> None:
    with pytest.raises(ValueError) as error:
        call(tokenizer)
    assert str(error.value) == expected


def test_invalid_residues_x_maps_to_x() -> None:
    tokenizer = PLMTokenizerFast(invalid_residues="X")
    assert tokenizer.tokenize("MK*t 1<mask>J") == ["M", "K", "X", "T", "X", "<mask>", "X"]
    x_id = tokenizer.convert_tokens_to_ids("X")
    assert tokenizer(["AC", "A-C"])["input_ids"] == [[1, 9, 10, 2], [1, 9, x_id, 10, 2]]


def test_invalid_residues_drop_removes_characters() -> None:
    tokenizer = PLMTokenizerFast(invalid_residues="drop")
    assert tokenizer.tokenize("MK*t 1<mask>J") == ["M", "K", "T", "<mask>"]
    assert tokenizer(["AC", "A-C."], ["9", "M"])["input_ids"] == [[1, 9, 10, 2, 2], [1, 9, 10, 2, 19, 2]]


def test_invalid_residues_rejects_unknown_policy() -> None:
    with pytest.raises(ValueError, match="invalid_residues must be one of"):
        PLMTokenizerFast(invalid_residues="ignore")


def test_added_special_token_is_not_an_invalid_residue() -> None:
    tokenizer = PLMTokenizerFast()
    with pytest.raises(ValueError, match=re.escape("Invalid residue '<' at position 3")):
        tokenizer("MK<linker>A")
    assert tokenizer.add_tokens(["<linker>"], special_tokens=True) == 1
    assert tokenizer("MK<linker>A")["input_ids"] == [1, 19, 17, 34, 9, 2]


def test_ragged_batch_is_right_padded_by_default(tokenizer: PLMTokenizerFast) -> None:
    batch = tokenizer(["MKT", "MKTAY"], padding=True)
    assert batch["input_ids"] == [[1, 19, 17, 25, 2, 0, 0], [1, 19, 17, 25, 9, 28, 2]]
    assert batch["attention_mask"] == [[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]]


def test_ragged_batch_is_left_padded_on_request(tokenizer: PLMTokenizerFast) -> None:
    expected_ids = [[0, 0, 1, 19, 17, 25, 2], [1, 19, 17, 25, 9, 28, 2]]
    expected_mask = [[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]]
    per_call = tokenizer(["MKT", "MKTAY"], padding=True, padding_side="left")
    assert per_call["input_ids"] == expected_ids
    assert per_call["attention_mask"] == expected_mask
    left = PLMTokenizerFast(padding_side="left")
    assert left.padding_side == "left"
    assert left(["MKT", "MKTAY"], padding=True)["input_ids"] == expected_ids


def test_padding_returns_tensors(tokenizer: PLMTokenizerFast) -> None:
    torch = pytest.importorskip("torch")
    batch = tokenizer(["MKT", "MKTAY"], padding=True, return_tensors="pt")
    assert torch.equal(batch["attention_mask"].sum(dim=1), torch.tensor([5, 7]))


def test_save_and_load_keep_policy_and_ids(tmp_path: Path) -> None:
    original = PLMTokenizerFast(invalid_residues="drop")
    original.save_pretrained(tmp_path)
    assert {"tokenizer.json", "tokenizer_config.json", "vocab.txt"} <= {path.name for path in tmp_path.iterdir()}
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["invalid_residues"] == "drop"
    assert config["tokenizer_class"] == "PLMTokenizerFast"
    assert read_vocab_file(tmp_path / "vocab.txt") == EXPECTED_VOCAB

    loaded = PLMTokenizerFast.from_pretrained(tmp_path)
    assert loaded.invalid_residues == "drop"
    batch = [*SEQUENCES, "MK*T<smask>9lv", "<gmask>AC<sop>"]
    assert loaded(batch)["input_ids"] == original(batch)["input_ids"]
    assert loaded.all_special_ids == original.all_special_ids
    assert loaded.gmask_token_id == 5


def test_from_pretrained_accepts_policy_override(tmp_path: Path) -> None:
    PLMTokenizerFast(invalid_residues="X").save_pretrained(tmp_path)
    loaded = PLMTokenizerFast.from_pretrained(tmp_path, invalid_residues="error")
    with pytest.raises(ValueError, match=re.escape("Invalid residue '*' at position 2")):
        loaded("M*")


def test_esm_vocab_gives_esm_ids(esm_vocab_file: Path) -> None:
    esm = PLMTokenizerFast(vocab_file=esm_vocab_file, bos_token="<cls>")
    assert len(esm) == len(ESM_VOCAB) == 33
    assert esm.get_vocab() == {token: index for index, token in enumerate(ESM_VOCAB)}
    assert (esm.bos_token_id, esm.pad_token_id, esm.eos_token_id, esm.unk_token_id) == (0, 1, 2, 3)
    assert esm.convert_tokens_to_ids("L") == 4
    assert esm.mask_token_id == 32
    # "." and "-" are ordinary residues of the ESM vocabulary, not invalid characters.
    assert esm("LAG.-<mask>")["input_ids"] == [0, 4, 5, 6, 29, 30, 32, 2]
    assert esm(UBIQUITIN)["input_ids"] == [0, *(ESM_VOCAB.index(residue) for residue in UBIQUITIN), 2]
    glm = (esm.gmask_token, esm.gmask_token_id, esm.smask_token, esm.smask_token_id, esm.sop_token_id, esm.eop_token_id)
    assert glm == (None,) * 6
    assert esm.decode(esm("MK<null_1>T")["input_ids"], skip_special_tokens=True) == "MKT"
    with pytest.raises(ValueError, match=re.escape("expected one of LAGVSERTIDPKQNFYMHWCXBUZO.- or")):
        esm("MK*")


def test_esm_vocab_save_load_round_trip(esm_vocab_file: Path, tmp_path: Path) -> None:
    esm = PLMTokenizerFast(vocab_file=esm_vocab_file, bos_token="<cls>")
    save_dir = tmp_path / "saved"
    esm.save_pretrained(save_dir)
    assert read_vocab_file(save_dir / "vocab.txt") == ESM_VOCAB
    loaded = PLMTokenizerFast.from_pretrained(save_dir)
    assert loaded.bos_token == "<cls>"
    assert loaded("LAG.-<mask>")["input_ids"] == esm("LAG.-<mask>")["input_ids"]
    # tokenizer.json alone is authoritative (not unpacked by transformers' convert_to_native_format).
    (save_dir / "vocab.txt").unlink()
    from_json = PLMTokenizerFast.from_pretrained(save_dir)
    assert from_json("LAG.-<mask>")["input_ids"] == [0, 4, 5, 6, 29, 30, 32, 2]
    # A directory with only ESM's vocab.txt (no tokenizer.json) also loads.
    vocab_only = tmp_path / "vocab_only"
    vocab_only.mkdir()
    (vocab_only / "vocab.txt").write_text(esm_vocab_file.read_text(encoding="utf-8"), encoding="utf-8")
    from_vocab = PLMTokenizerFast.from_pretrained(vocab_only, bos_token="<cls>")
    assert from_vocab("LAG<mask>")["input_ids"] == [0, 4, 5, 6, 32, 2]


def test_missing_named_special_token_is_an_error(esm_vocab_file: Path) -> None:
    # ESM has no <bos>: failing loudly beats silently appending a token to the vocabulary.
    with pytest.raises(ValueError, match=re.escape("bos_token '<bos>' is not in the vocabulary")):
        PLMTokenizerFast(vocab_file=esm_vocab_file)


def test_build_backend_tokenizer_rejects_bad_vocab() -> None:
    with pytest.raises(ValueError, match="Duplicate token 'A'"):
        build_backend_tokenizer(["<pad>", "<unk>", "A", "A"], "<pad>", "<pad>", "<pad>", "<unk>", ["<pad>", "<unk>"])
    with pytest.raises(ValueError, match=re.escape("eos_token '<eos>' is not in the vocabulary")):
        build_backend_tokenizer(["<pad>", "<unk>", "A"], "<pad>", "<eos>", "<pad>", "<unk>", ["<pad>", "<unk>"])


def test_build_script_check_passes_on_committed_tokenizer_json() -> None:
    result = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--check"], capture_output=True, text=True, cwd=REPO_ROOT, check=False
    )
    assert result.returncode == 0, result.stderr


def test_build_script_check_detects_stale_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = load_build_script()
    output = tmp_path / "tokenizer.json"
    output.write_text("{}\n", encoding="utf-8")
    monkeypatch.setattr(script, "OUTPUT_PATH", output)
    assert script.main(["--check"]) == 1
    assert script.main([]) == 0
    assert script.main(["--check"]) == 0
    committed = REPO_ROOT / "tokenizer" / "tokenizer.json"
    assert output.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8")


def test_default_tokenizer_falls_back_to_repo_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_resource_package(package: str) -> None:
        raise ModuleNotFoundError(f"No module named {package!r}")

    # As in a source checkout without the wheel's modeling_plm.tokenizer_data mapping.
    monkeypatch.setattr(tokenization_plm.importlib.resources, "files", no_resource_package)
    assert PLMTokenizerFast().get_vocab() == {token: index for index, token in enumerate(EXPECTED_VOCAB)}


def test_auto_tokenizer_loads_saved_tokenizer(tmp_path: Path) -> None:
    PLMTokenizerFast(invalid_residues="X").save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, PLMTokenizerFast)
    assert loaded.tokenize("M*") == ["M", "X"]


def test_saved_module_works_as_remote_code_without_the_package(tmp_path: Path) -> None:
    save_dir = tmp_path / "checkpoint"
    PLMTokenizerFast(invalid_residues="drop").save_pretrained(save_dir)
    assert (save_dir / "tokenization_plm.py").is_file()
    code = (
        "import sys\n"
        "sys.modules['modeling_plm'] = None  # as on a machine without the package\n"
        "from transformers.dynamic_module_utils import get_class_from_dynamic_module\n"
        f"cls = get_class_from_dynamic_module('tokenization_plm.PLMTokenizerFast', {str(save_dir)!r})\n"
        f"tokenizer = cls.from_pretrained({str(save_dir)!r})\n"
        "print(cls.__module__.startswith('transformers_modules.'), tokenizer('MK*<mask>')['input_ids'])\n"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True [1, 19, 17, 4, 2]"


def test_swissprot_batch_round_trips(tokenizer: PLMTokenizerFast, swissprot_sequences: list[str]) -> None:
    batch = tokenizer(swissprot_sequences, padding=True)
    lengths = [sum(mask) for mask in batch["attention_mask"]]
    assert lengths == [len(sequence) + 2 for sequence in swissprot_sequences]
    assert tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True) == swissprot_sequences


def test_special_tokens_added_to_ids_match_the_encoding():
    """`build_inputs_with_special_tokens` (how the engines wrap residue windows) is the post-processor's layout."""
    tokenizer = PLMTokenizerFast()
    residues = tokenizer("MKTAYIAK", add_special_tokens=False)["input_ids"]
    other = tokenizer("GGW", add_special_tokens=False)["input_ids"]
    assert tokenizer.build_inputs_with_special_tokens(residues) == tokenizer("MKTAYIAK")["input_ids"]
    assert tokenizer.build_inputs_with_special_tokens(residues, other) == tokenizer("MKTAYIAK", "GGW")["input_ids"]
