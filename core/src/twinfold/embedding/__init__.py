"""Embeddings of image folders and dataset splits with a trained backbone
(``twinfold embed``); see :func:`embed`."""

from twinfold.embedding.run import EmbedResult, embed

__all__ = ["EmbedResult", "embed"]
