"""Contract-battery cases for the masking operators."""

CASES: dict = {}
