"""Evaluation: bits per byte, knowledge probes, samples."""
