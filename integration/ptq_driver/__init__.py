"""Pieces of the CenterPoint PTQ driver (integration/centerpoint_ptq.py) that do not depend on
a detection framework: option checking, data-root rewriting, the results table."""
