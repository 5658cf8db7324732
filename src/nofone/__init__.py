"""nofone: N-of-one differential expression against a generative model of normal tissue."""

__version__ = "0.1.0"
