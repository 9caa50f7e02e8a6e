"""The bare app that :mod:`loadtest.calibration` times: a QuartTrio app with one route, ``GET /ping``.

Nothing of Collab's: no settings, middleware, database or logging of its own,
so its req/s under ``hypercorn -k trio`` measures the stack and the machine,
as the hello-world route of STACK.md (trap 2) did. Keep it that way: anything
added here changes what the reference figure means.
"""

from __future__ import annotations

from quart_trio import QuartTrio

app = QuartTrio(__name__)


@app.get("/ping")
async def ping() -> dict[str, bool]:
    return {"ok": True}
