"""The local web app (``harmonycloak serve``): drop songs in, hear the difference, take
protected files out. Needs the ``web`` extra (FastAPI, uvicorn, python-multipart).

``create_app`` lives in :mod:`harmonycloak.web.app`; this package imports nothing heavy so
that the settings can be built before FastAPI is imported.
"""

from harmonycloak.web.settings import DEFAULT_PROTECT_MODE, ServeSettings, is_loopback

__all__ = ["DEFAULT_PROTECT_MODE", "ServeSettings", "is_loopback"]
