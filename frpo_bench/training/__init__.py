"""Training helpers shared by the alignment, the attacks and the trained defenses: supervised
fine-tuning, tokenising and batching, peft configs, representation losses, accelerate and ranks."""
