"""Neural building blocks shared by the PyTorch recall and ranking models."""
