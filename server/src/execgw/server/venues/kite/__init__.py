"""Zerodha Kite Connect as a venue: the engine's half (venue.py) and the I/O (link.py)."""
