"""Contract-battery cases for the hyperspectral operators."""

CASES: dict = {}
