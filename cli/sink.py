"""`mmhub sink`: a local HTTP server that accepts anything and logs it, standing in for targets.

It answers 200 with `{"result": true}` (what a Bitrix24 REST call returns), so every target kind
counts as delivered; `make run` points the bundled dev configuration's targets at it.
"""

from __future__ import annotations

import logging

from aiohttp import web

log = logging.getLogger("mmhub.sink")


async def _receive(request: web.Request) -> web.Response:
    body = await request.read()
    log.info(
        "received %s %s",
        request.method,
        request.path,
        extra={
            "idempotency_key": request.headers.get("Idempotency-Key"),
            "bytes": len(body),
            "content_type": request.headers.get("Content-Type"),
        },
    )
    return web.json_response({"result": True})


def serve_sink(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _receive)
    web.run_app(app, host=host, port=port, print=None, access_log=None)
