"""The customer API, one module per resource (routed in config/api_urls.py)."""
