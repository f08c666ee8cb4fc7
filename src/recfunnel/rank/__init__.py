"""The ranking stage: scorers over merged candidates."""
