"""recfunnel: a multi-stage recommender system (recall, rank, re-rank, evaluate, serve)."""

__version__ = "0.1.0"
