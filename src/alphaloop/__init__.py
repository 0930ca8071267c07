"""alphaloop: an autonomous research loop for systematic trading strategies."""
__version__ = "0.1.0"
