"""Default vocabulary and tokenizer.json of modeling_plm, shipped as package data (modeling_plm.tokenizer_data)."""
