"""codesign: select a frozen language model's layer features by software-hardware co-design."""

__version__ = "0.1.0"
