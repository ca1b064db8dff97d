"""Serving: the OpenAI-compatible HTTP API and the web chat page (`myllm serve RUN_DIR`)."""
