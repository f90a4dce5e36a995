"""Placeholder: the lenet family is not written yet."""
