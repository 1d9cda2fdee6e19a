"""bench: which pretrained checkpoint to fine-tune, and which cheap proxy predicts that best."""
__version__ = "0.1.0"
