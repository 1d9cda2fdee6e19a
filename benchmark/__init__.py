"""bench: which pretrained checkpoint to fine-tune, and which cheap proxy predicts that best."""
__version__ = "0.1.0"


def convert_bn(model, batches):
    """DAFT's BN conversion (see benchmark.training.bn.convert_bn); imported lazily to keep `import benchmark` light."""
    from .training.bn import convert_bn as _convert_bn
    return _convert_bn(model, batches)
