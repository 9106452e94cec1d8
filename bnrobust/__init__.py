"""bnrobust: measure and explain how batch normalization changes robustness."""
__version__ = "0.1.0"
