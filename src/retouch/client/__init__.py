"""retouch's Python client: run a slug on a retouch server, images in and out as files, bytes, PIL or NumPy.

It needs httpx only (Pillow and NumPy when you pass or ask for those): importing it loads none of the
server's dependencies.

    from retouch import client
    result = client.run("background-eraser", image="photo.jpg", return_mask=False)
    result.save("cutout.png")

`RETOUCH_BASE_URL` (default http://127.0.0.1:8000) and `RETOUCH_API_KEY` configure the default client.
"""

from retouch.client.asynchronous import AsyncClient, AsyncJob
from retouch.client.core import (
    Client,
    InferenceFailed,
    InferenceTimeout,
    Job,
    NotEnoughCredits,
    PermissionDenied,
    RateLimited,
    Result,
    RetouchError,
    Unauthorized,
    default_client,
    run,
    run_sync,
    submit_async,
)

__all__ = [
    "AsyncClient",
    "AsyncJob",
    "Client",
    "InferenceFailed",
    "InferenceTimeout",
    "Job",
    "NotEnoughCredits",
    "PermissionDenied",
    "RateLimited",
    "Result",
    "RetouchError",
    "Unauthorized",
    "default_client",
    "run",
    "run_sync",
    "submit_async",
]
