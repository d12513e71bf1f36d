"""Evaluation: VQA scoring, decoding, image metrics, linear probes and qualitative sheets."""
