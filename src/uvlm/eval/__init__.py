"""Scoring: VQA answers now; generated images in later modules."""
