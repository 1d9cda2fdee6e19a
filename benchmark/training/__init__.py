"""The training engine and the protocols declared over it."""
from .bn import convert_bn
from .protocols import PROTOCOLS

__all__ = ["PROTOCOLS", "convert_bn"]
