"""Hub: `export` writes (and pushes) a self-contained hub folder, `model_card` renders its README from the
checkpoint's provenance, `convert` registers the converters of other families' checkpoints (`converters/`, one
module per family)."""
