"""Venues: where accepted orders go (paper simulator, Kite, a dry run of Kite)."""
