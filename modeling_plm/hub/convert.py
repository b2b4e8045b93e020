"""Checkpoint conversion between other model families and modeling_plm (`plm convert FAMILY SOURCE DESTINATION`).

`CONVERTERS` is the registry `plm convert` builds its subcommands from. Each family lives in its own module under
`modeling_plm.hub.converters` and lists its `Converter` entries (one per direction); adding a family is adding its
module's entries here. The ESM-2 names stay importable from this module (`modeling_plm.convert` is this module).
"""

from .converters import amplify, esm2, esmc, progen2, rita, t5, xtrimopglm
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

FAMILIES = (esm2, esmc, progen2, rita, amplify, xtrimopglm, t5)
CONVERTERS: dict[str, Converter] = {converter.name: converter for family in FAMILIES for converter in family.CONVERTERS}
# The published sizes of each family, defined beside its converter; `config_from_preset` serves them all (the package
# adds them to `training.presets.PRESETS` on import). ESM-2's live in `training.presets` itself.
FAMILY_PRESETS: dict[str, dict] = {
    **esmc.ESMC_PRESETS,
    **progen2.PROGEN2_PRESETS,
    **rita.RITA_PRESETS,
    **amplify.AMPLIFY_PRESETS,
    **xtrimopglm.XTRIMOPGLM_PRESETS,
    **t5.T5_PRESETS,
}

__all__ = [
    "CONVERTERS",
    "ESM2_FIXED_KNOBS",
    "FAMILIES",
    "FAMILY_PRESETS",
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
