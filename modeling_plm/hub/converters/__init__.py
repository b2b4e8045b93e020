"""Checkpoint converters, one module per model family (`esm2`), sharing `common` (the `Converter` entry, weight
loading, source resolution, renaming tables, the conversion record). `modeling_plm.hub.convert` registers them."""
