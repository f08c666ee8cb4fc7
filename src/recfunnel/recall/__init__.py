"""Recall channels (Sources) and the merge of their candidates."""
