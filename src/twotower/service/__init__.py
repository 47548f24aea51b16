"""HTTP serving: a FastAPI app over one run directory, and ``serve`` to run it.

    from twotower.service import create_app, serve
    app = create_app("runs/ml100k")          # for tests, or to mount in a larger app
    serve("runs/ml100k", port=8000)          # what `twotower serve` runs
"""

from twotower.service.app import create_app
from twotower.service.server import serve

__all__ = ["create_app", "serve"]
