"""twinfold-timm: any timm model (``timm.create_model``) as a twinfold encoder."""

from twinfold_timm.encoder import TimmConfig, TimmEncoder

__all__ = ["TimmConfig", "TimmEncoder"]
