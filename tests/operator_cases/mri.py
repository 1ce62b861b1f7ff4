"""Contract-battery cases for the mri operators."""

CASES: dict = {}
