"""What comes in: model files (formats and their safety checks) and data tables."""
