"""Data readers: tabular files and the bundled Ames table beside image layouts and the bundled
digits, and filling a data folder from Kaggle or the bundled data (``sources``)."""
