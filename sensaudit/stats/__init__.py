"""Sums that merge exactly over any partition of the rows: moments, attribution sums, bootstrap
replicates, row samples."""
