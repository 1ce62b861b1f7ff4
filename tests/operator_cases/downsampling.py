"""Contract-battery cases for the downsampling operators."""

CASES: dict = {}
