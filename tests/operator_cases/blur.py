"""Contract-battery cases for the blur operators."""

CASES: dict = {}
