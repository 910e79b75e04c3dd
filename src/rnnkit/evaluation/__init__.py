"""Evaluation: perplexity over a stream, sentence scores, interpolation, rescoring."""
