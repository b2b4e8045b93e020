"""Package layout; the metadata lives in pyproject.toml.

Code packages are discovered, so a new subpackage ships without editing anything. The tokenizer files and the model
card template stay in their top-level folders (`tokenizer/`, `model_cards/`) and ship inside the wheel as the data
packages `modeling_plm.tokenizer_data` and `modeling_plm.model_cards`.
"""

from setuptools import find_packages, setup

DATA_PACKAGES = {"modeling_plm.tokenizer_data": "tokenizer", "modeling_plm.model_cards": "model_cards"}

setup(
    packages=find_packages(include=["modeling_plm", "modeling_plm.*"]) + list(DATA_PACKAGES),
    package_dir=DATA_PACKAGES,
    package_data={"modeling_plm.tokenizer_data": ["*.json", "*.txt"], "modeling_plm.model_cards": ["*.md"]},
)
