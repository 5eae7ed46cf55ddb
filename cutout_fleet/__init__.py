"""cutout-fleet: queue-driven batch background removal for catalog photos."""

__version__ = "0.1.0"
