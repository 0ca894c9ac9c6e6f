"""The only way Django code reaches the matcher in ``matching.ml``."""
