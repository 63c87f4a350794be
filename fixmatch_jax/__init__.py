"""fixmatch_jax: semi-supervised learning by pseudo-labelling, Pseudo-Label to FixMatch, in JAX."""

__version__ = "0.1.0"
