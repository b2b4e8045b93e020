"""transformers' own common model tests, taken from the source distribution of the installed transformers.

`load_common_tests()` downloads that sdist once (`pip download --no-deps --no-binary :all: transformers==<installed>`)
into a cache folder (`$PLM_TRANSFORMERS_TESTS_CACHE`, default `~/.cache/modeling_plm/transformers-tests`), unpacks
its `tests/test_modeling_common.py` and `tests/test_configuration_common.py` into an importable package
(`hf_common_tests`), and returns `ModelTesterMixin` and `ConfigTester`. Nothing is committed to this repository.

The sdist ships those two files but not the folders they import from (`tests/generation`, `tests/exporters`,
`tests/utils`). The package gets placeholders for them, each saying what is missing:

- `GenerationTesterMixin`: an empty class. transformers' generation tests are not in the sdist, so our own exact
  generation tests (tests/test_generation.py) cover cached == uncached, beam search, assisted decoding, continuing
  from a cache and `inputs_embeds` instead.
- `ExportTesterMixin`: an empty class (the torch.export tests are not in the sdist).
- `config_common_kwargs`: our own set of non-default `PretrainedConfig` arguments, for `ConfigTester`'s check that
  every common argument reaches the config.
"""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import transformers

PACKAGE = "hf_common_tests"
FILES = ("test_modeling_common.py", "test_configuration_common.py")

PLACEHOLDERS = {
    "generation/test_utils.py": '''"""Placeholder: transformers' tests/generation is not in its source distribution."""


class GenerationTesterMixin:
    """Empty: transformers' generation tests are not in the sdist (see tests/transformers_suite.py)."""
''',
    "exporters/test_export.py": '''"""Placeholder: transformers' tests/exporters is not in its source distribution."""


class ExportTesterMixin:
    """Empty: transformers' torch.export tests are not in the sdist (see tests/transformers_suite.py)."""
''',
    "utils/test_configuration_utils.py": '''"""Non-default values of PretrainedConfig's common arguments.

ConfigTester checks that each reaches the config. Written for modeling_plm: transformers' tests/utils is not in its
source distribution."""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "tie_word_embeddings": False,
    "chunk_size_feed_forward": 5,
    "architectures": ["PLMForMaskedLM"],
    "finetuning_task": "contact-prediction",
    "id2label": {0: "buried", 1: "exposed"},
    "label2id": {"buried": 0, "exposed": 1},
    "tokenizer_class": "PLMTokenizerFast",
    "prefix": "<cls>",
    "bos_token_id": 7,
    "pad_token_id": 8,
    "eos_token_id": 9,
    "sep_token_id": 10,
    "decoder_start_token_id": 11,
    "task_specific_params": {"generation": {"max_length": 64}},
    "problem_type": "single_label_classification",
}
''',
}


def cache_root() -> Path:
    default = Path.home() / ".cache" / "modeling_plm" / "transformers-tests"
    return Path(os.environ.get("PLM_TRANSFORMERS_TESTS_CACHE", default))


def download_sdist(version: str, folder: Path) -> Path:
    """The transformers sdist of `version` in `folder`, downloaded with pip when not there yet."""
    existing = sorted(folder.glob(f"transformers-{version}.tar.gz"))
    if existing:
        return existing[0]
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet"]
    completed = subprocess.run(
        [*command, "--dest", str(folder), f"transformers=={version}"], capture_output=True, text=True, timeout=600
    )
    found = sorted(folder.glob(f"transformers-{version}.tar.gz"))
    if completed.returncode != 0 or not found:
        raise RuntimeError(f"pip could not download the transformers {version} sdist:\n{completed.stderr[-2000:]}")
    return found[0]


def unpack_tests(sdist: Path, root: Path, version: str) -> None:
    package = root / PACKAGE
    if all((package / name).exists() for name in FILES):
        return
    package.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as archive:
        for name in FILES:
            member = archive.getmember(f"transformers-{version}/tests/{name}")
            (package / name).write_bytes(archive.extractfile(member).read())
    (package / "__init__.py").write_text(f'"""transformers {version} common tests, from its sdist."""\n')
    for relative, text in PLACEHOLDERS.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)


def load_common_tests():
    """(ModelTesterMixin, ConfigTester) of the installed transformers version."""
    version = transformers.__version__
    root = cache_root() / version
    unpack_tests(download_sdist(version, cache_root()), root, version)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from hf_common_tests.test_configuration_common import ConfigTester
    from hf_common_tests.test_modeling_common import ModelTesterMixin

    return ModelTesterMixin, ConfigTester
