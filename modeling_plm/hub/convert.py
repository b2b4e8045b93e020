"""Checkpoint conversion between other model families and modeling_plm (`plm convert FAMILY SOURCE DESTINATION`).

`CONVERTERS` is the registry `plm convert` builds its subcommands from. Each family lives in its own module under
`modeling_plm.hub.converters` and lists its `Converter` entries (one per direction); adding a family is adding its
module's entries here. The ESM-2 names stay importable from this module (`modeling_plm.convert` is this module).
"""

from .converters import esm2
from .converters.common import Converter, load_checkpoint_weights
from .converters.esm2 import (
    ESM2_FIXED_KNOBS,
    ESM2_VOCAB,
    convert_esm2,
    convert_plm_to_esm2,
    esm_config_to_plm,
    esm_state_dict_to_plm,
    plm_config_to_esm,
    plm_state_dict_to_esm,
)

CONVERTERS: dict[str, Converter] = {converter.name: converter for converter in esm2.CONVERTERS}

__all__ = [
    "CONVERTERS",
    "ESM2_FIXED_KNOBS",
    "ESM2_VOCAB",
    "Converter",
    "convert_esm2",
    "convert_plm_to_esm2",
    "esm_config_to_plm",
    "esm_state_dict_to_plm",
    "load_checkpoint_weights",
    "plm_config_to_esm",
    "plm_state_dict_to_esm",
]
