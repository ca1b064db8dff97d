"""Exports of a run's model: a Hugging Face directory (`hf.py`), a llama.cpp GGUF file (`gguf.py`)
and a weight-only int8/int4 copy (`quantize.py`). Each reads only the run directory's outputs (the
checkpoint `RunDir.model_checkpoint` picks and `tokenizer/`), as every stage does.
"""
