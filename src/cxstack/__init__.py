"""cxstack: AI customer support as an engineered system."""

__version__ = "0.1.0"
