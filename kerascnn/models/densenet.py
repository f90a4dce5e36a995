"""Placeholder: the densenet family is not written yet."""
