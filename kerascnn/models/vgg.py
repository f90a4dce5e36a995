"""Placeholder: the vgg family is not written yet."""
