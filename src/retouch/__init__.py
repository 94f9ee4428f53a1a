"""retouch: a self-hosted image-editing inference service."""

__version__ = "0.1.0"
