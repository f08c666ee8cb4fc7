"""ANN indexes over item vectors (faiss)."""
