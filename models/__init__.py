"""Formulations: each module builds a solver-neutral model from a description and decodes
a solution back into a plan."""
