"""The tenant's greeting (its agent profile's ``greeting``), for a chat client to show first.

A client opening a conversation asks for it before the customer has typed anything and shows it
as the assistant's first message. It is not stored in the session's history (nobody asked
anything yet) and never sent to the model. Any caller of the tenant may read it (role customer).
"""

from __future__ import annotations

from aiohttp import web

from msev15.handlers.jsonbody import json_response
from msev15.handlers.tenancy import request_tenant
from msev15.store.profiles import PROFILES

PATH = "/api/v1/greeting"


async def greeting(request: web.Request) -> web.Response:
    """The tenant's greeting.
    ---
    summary: Greeting
    description: |
      The greeting of the tenant's agent profile (`greeting`), for a chat client to show as the
      assistant's first message of a new conversation; `null` when the profile sets none or the
      tenant has no profile (`profile_version` 0). It is not part of the session's history and
      the model never sees it. Under `AUTH_MODE=none` the tenant is `?tenant_id=`; with
      credentials, the credential's.
    tags: [chat]
    parameters:
      - {in: query, name: tenant_id, required: false, schema: {$ref: "#/components/schemas/Id"}}
    responses:
      "200":
        description: The greeting.
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Greeting"}
      "400": {$ref: "#/components/responses/BadRequest"}
    """
    tenant_id = request_tenant(request)
    store = request.app.get(PROFILES)
    record = await store.current(tenant_id) if store is not None else None
    text = record.parsed.greeting if record is not None else None
    return json_response({"tenant_id": tenant_id, "greeting": text,
                          "profile_version": record.version if record is not None else 0})


def setup_routes(app: web.Application) -> None:
    app.router.add_get(PATH, greeting)
