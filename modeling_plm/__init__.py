"""modeling_plm: protein language models for the Hugging Face ecosystem.

Importing the package registers the config, models and tokenizer with transformers' Auto classes, marks them for
remote code so that `save_pretrained` writes an `auto_map` usable without this package installed, and hooks the
runtime speed-ups of `modeling_plm.kernels` into the models.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from .configuration_plm import PLMConfig
from .modeling_plm import (
    PLMForCausalLM,
    PLMForMaskedLM,
    PLMForSequenceClassification,
    PLMForTokenClassification,
    PLMModel,
    PLMPreTrainedModel,
)
from .tokenization_plm import PLMTokenizerFast
from .training.lora import default_lora_config
from .training.presets import PRESETS, config_from_preset

__version__ = "0.1.0"

AUTO_CLASSES = {
    "AutoModel": (AutoModel, PLMModel),
    "AutoModelForMaskedLM": (AutoModelForMaskedLM, PLMForMaskedLM),
    "AutoModelForCausalLM": (AutoModelForCausalLM, PLMForCausalLM),
    "AutoModelForSequenceClassification": (AutoModelForSequenceClassification, PLMForSequenceClassification),
    "AutoModelForTokenClassification": (AutoModelForTokenClassification, PLMForTokenClassification),
}

AutoConfig.register(PLMConfig.model_type, PLMConfig, exist_ok=True)
PLMConfig.register_for_auto_class()
for _auto_name, (_auto_class, _model_class) in AUTO_CLASSES.items():
    _auto_class.register(PLMConfig, _model_class, exist_ok=True)
    _model_class.register_for_auto_class(_auto_name)
AutoTokenizer.register(PLMConfig, fast_tokenizer_class=PLMTokenizerFast, exist_ok=True)
PLMTokenizerFast.register_for_auto_class("AutoTokenizer")

from . import inference  # noqa: E402, F401  (registers the protein-* pipeline tasks; needs the Auto classes above)
from .kernels import install as _install_kernels  # noqa: E402

_install_kernels()  # the CPU and packing speed-ups for every model this package builds or loads
from .hub.convert import FAMILY_PRESETS  # noqa: E402

PRESETS.update(FAMILY_PRESETS)  # every family's published sizes (ESM C, ProGen2, ...), beside ours and ESM-2's
from ._moved import install as _install_moved_modules  # noqa: E402

_install_moved_modules()  # the import paths of modules that moved into subpackages

__all__ = [
    "PLMConfig",
    "PLMModel",
    "PLMPreTrainedModel",
    "PLMForMaskedLM",
    "PLMForCausalLM",
    "PLMForSequenceClassification",
    "PLMForTokenClassification",
    "PLMTokenizerFast",
    "PRESETS",
    "config_from_preset",
    "default_lora_config",
]
