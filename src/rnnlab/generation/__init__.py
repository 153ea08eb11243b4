"""Sampling and decoding, the fast stepper, poems."""
