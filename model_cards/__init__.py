"""Model-card templates, shipped inside the wheel as modeling_plm.model_cards."""
