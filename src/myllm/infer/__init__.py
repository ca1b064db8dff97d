"""Inference: the KV-cache generation engine."""
