"""frpo-bench: how well does an LLM's safety survive fine-tuning?

Importing this package is cheap: torch, transformers, peft, lm-eval and vLLM are
imported only by the stages that use them.
"""
__version__ = "0.1.0"
