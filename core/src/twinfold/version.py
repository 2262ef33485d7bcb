"""The version of the twinfold core distribution."""

__version__ = "0.1.0"
