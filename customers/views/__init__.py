"""Customer web UI, one module per area (routed in customers/urls.py)."""
