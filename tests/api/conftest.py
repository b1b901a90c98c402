"""pytest fixtures of the API tests; the helpers live in palisade_api.py
(a unique module name, so other test folders' conftest files cannot clash)."""

from palisade_api import admin, fresh, server  # noqa: F401  (fixtures)
