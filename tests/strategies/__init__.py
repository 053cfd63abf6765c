"""Tests of loramerge.strategies and loramerge.refine."""
