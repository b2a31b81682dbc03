"""Estimators and networks, found by name in ``models.registry``."""
