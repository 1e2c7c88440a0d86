"""The A2A agent card at ``GET /.well-known/agent-card.json``: public, names no secret.

It says where the JSON-RPC endpoint is (``/a2a`` on the host the caller reached), what the agent
can do (its skills), that it streams and has no push notifications, and how to authenticate
under the running AUTH_MODE: none, an API key (``X-API-Key`` header or ``Authorization:
Bearer``) or a bearer JWT. The A2A 0.3 fields (``url``, ``preferredTransport``,
``protocolVersion``, ...) are merged in, so 0.3 clients read the same card.
"""

from __future__ import annotations

from typing import Any

from a2a.compat.v0_3.conversions import to_compat_agent_card
from a2a.types import a2a_pb2 as pb
from aiohttp import web
from google.protobuf.json_format import MessageToDict

from msev15 import __version__
from msev15.config import SETTINGS

MODES = ["text/plain", "application/json"]

_SKILLS = [
    ("orders", "Orders", "Looks up the customer's orders, their status, items and tracking.",
     ["orders", "tracking"], ["Where is order ORD-1A2B3C4D?", "Show my recent orders"]),
    ("complaints", "Complaints", "Files, reads and updates customer complaints.",
     ["complaints"], ["I want to complain about a damaged parcel"]),
    ("email", "Email", "Sends the customer an email: a summary, an order confirmation, a follow-up.",
     ["email"], ["Email me a summary of this conversation"]),
    ("escalation", "Escalation", "Opens a support ticket and notifies the customer and the support team.",
     ["escalation", "support"], ["Escalate this to a person"]),
    ("handoff", "Human handoff", "Hands the conversation to a human operator when the customer asks for one.",
     ["handoff", "human"], ["I want to talk to a person"]),
]


def _security(auth_mode: str) -> tuple[dict[str, pb.SecurityScheme], list[pb.SecurityRequirement]]:
    if auth_mode == "api_key":
        schemes = {
            "apiKey": pb.SecurityScheme(api_key_security_scheme=pb.APIKeySecurityScheme(
                location="header", name="X-API-Key", description="An API key made with `msev15 keys create`.")),
            "bearer": pb.SecurityScheme(http_auth_security_scheme=pb.HTTPAuthSecurityScheme(
                scheme="Bearer", description="The same API key as `Authorization: Bearer <key>`.")),
        }
    elif auth_mode == "jwt":
        schemes = {"bearer": pb.SecurityScheme(http_auth_security_scheme=pb.HTTPAuthSecurityScheme(
            scheme="Bearer", bearer_format="JWT", description="A JWT from the deployment's issuer."))}
    else:
        return {}, []
    return schemes, [pb.SecurityRequirement(schemes={name: pb.StringList()}) for name in schemes]


def agent_card(rpc_url: str, auth_mode: str) -> pb.AgentCard:
    schemes, requirements = _security(auth_mode)
    card = pb.AgentCard(
        name="CustomerServiceAgent",
        description="A customer-service agent: orders, complaints, email, escalation to the support team and "
                    "handoff to a person. Each task is one turn of a conversation (contextId = session).",
        version=__version__,
        # One endpoint, both versions: the 0.3 method names are aliases (handlers/a2a_legacy.py).
        supported_interfaces=[pb.AgentInterface(url=rpc_url, protocol_binding="JSONRPC",
                                                protocol_version=version) for version in ("1.0", "0.3")],
        capabilities=pb.AgentCapabilities(streaming=True, push_notifications=False, extended_agent_card=False),
        default_input_modes=MODES,
        default_output_modes=MODES,
        skills=[pb.AgentSkill(id=i, name=n, description=d, tags=t, examples=e) for i, n, d, t, e in _SKILLS],
        security_requirements=requirements,
    )
    for name, scheme in schemes.items():
        card.security_schemes[name].CopyFrom(scheme)
    return card


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if key not in into:
            into[key] = value
        elif isinstance(value, dict) and isinstance(into[key], dict):
            _merge(into[key], value)
    return into


def card_json(card: pb.AgentCard) -> dict[str, Any]:
    """The 1.0 card with the 0.3 fields merged in (the 1.0 field wins where both have one)."""
    legacy = to_compat_agent_card(card).model_dump(mode="json", by_alias=True, exclude_none=True)
    legacy.pop("supportsAuthenticatedExtendedCard", None)
    return _merge(MessageToDict(card), legacy)


def card_response(request: web.Request, rpc_path: str) -> web.Response:
    base = request.app[SETTINGS].public_base_url or f"{request.scheme}://{request.host}"
    rpc_url = base + rpc_path
    return web.json_response(card_json(agent_card(rpc_url, request.app[SETTINGS].auth_mode)))
