"""Build tokenizer/tokenizer.json from tokenizer/vocab.txt (the single source of truth for the vocabulary).

Usage: python tokenizer/build_tokenizer.py [--check]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOKENIZER_DIR = Path(__file__).resolve().parent
REPO_ROOT = TOKENIZER_DIR.parent
VOCAB_PATH = TOKENIZER_DIR / "vocab.txt"
OUTPUT_PATH = TOKENIZER_DIR / "tokenizer.json"
MODULE_PATH = REPO_ROOT / "modeling_plm" / "tokenization_plm.py"


def load_tokenization_module() -> ModuleType:
    """Import modeling_plm.tokenization_plm by path.

    The module is self-contained by contract, so loading it alone avoids importing the package __init__ (torch and
    the model code) and works from a source checkout without installing anything.
    """
    spec = importlib.util.spec_from_file_location("modeling_plm.tokenization_plm", MODULE_PATH)
    if spec is None or spec.loader is None:
        raise ImportError(f"Cannot load {MODULE_PATH}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_json() -> str:
    """The tokenizer.json text that vocab.txt defines."""
    tokenization = load_tokenization_module()
    vocab = tokenization.read_vocab_file(VOCAB_PATH)
    tokenizer = tokenization.build_backend_tokenizer(
        vocab,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        special_tokens=tokenization.special_tokens_of(vocab),
    )
    return tokenizer.to_str(pretty=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"Build {OUTPUT_PATH.name} from {VOCAB_PATH.name}.")
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"do not write; exit 1 if the committed {OUTPUT_PATH.name} differs from what would be built",
    )
    args = parser.parse_args(argv)

    expected = build_json()
    if args.check:
        current = OUTPUT_PATH.read_text(encoding="utf-8") if OUTPUT_PATH.is_file() else None
        if current != expected:
            rebuild = "python tokenizer/build_tokenizer.py"
            print(f"{OUTPUT_PATH} is missing or out of date with {VOCAB_PATH.name}; run: {rebuild}", file=sys.stderr)
            return 1
        print(f"{OUTPUT_PATH} is up to date")
        return 0
    OUTPUT_PATH.write_text(expected, encoding="utf-8")
    print(f"wrote {OUTPUT_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
