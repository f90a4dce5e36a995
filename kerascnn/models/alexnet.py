"""Placeholder: the alexnet family is not written yet."""
