"""Reusable scikit-learn transforms for tabular and image data. Imports neither models nor pipeline."""
