"""The JSON response class: orjson rendering (FastAPI's JSON is deprecated)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class JSON(JSONResponse):
    """A JSON response rendered by orjson."""

    def render(self, content: Any) -> bytes:
        """Serialise ``content``; non-JSON types are rendered with ``str``."""
        return orjson.dumps(content, default=str)
