"""Training: the accelerate loop for pretraining (`trainer`) and fine-tuning (`finetune`), model presets, LoRA
defaults and FLOPs accounting (`flops`)."""
