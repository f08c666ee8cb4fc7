"""Features: point-in-time popularity and the ranker's candidate features."""
