"""Contract-battery cases for the composed operators."""

CASES: dict = {}
