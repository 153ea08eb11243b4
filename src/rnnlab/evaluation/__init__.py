"""Exact evaluation of text and piano-roll models."""
