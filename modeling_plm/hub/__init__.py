"""Hub: export to a self-contained safetensors folder with a model card (`export`), and converters from other
families' checkpoints (`convert`)."""
