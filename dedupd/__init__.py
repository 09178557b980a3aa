"""dedupd: watch directories and deduplicate images safely."""

__version__ = "0.1.0"
