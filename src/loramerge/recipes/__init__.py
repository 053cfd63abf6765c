"""Hierarchical recipes: a tree of merge steps (schema), its short form (formula) and its run."""
