"""Azure Communication Services backend, through the ``azure-communication-email`` async client.

``send`` starts the send operation and returns once ACS has accepted it (HTTP 202): the message
is then ``sent``. Delivery is confirmed later by polling the operation (``poll``), which is what
``get_email_status`` does. Each message gets its own operation id, reused on retries, so ACS
sees a retried request as the same operation rather than a second email.

The SDK's own retry policy is switched off: the service's retry loop owns retries, backoff and
the overall time budget.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from msev15.common.mail import DeliveryError
from msev15.escalation import INSTALL_HINT
from msev15.escalation.config import AcsConnection
from msev15.escalation.models import MessageStatus, OutgoingEmail, ProviderStatus

try:
    from azure.communication.email.aio import EmailClient
    from azure.core.credentials import AzureKeyCredential
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceExistsError,
        ServiceRequestError,
        ServiceResponseError,
    )
    from azure.core.rest import HttpRequest
except ImportError as exc:
    raise ImportError(f"Azure Communication Services delivery needs azure-communication-email ({exc}); "
                      f"{INSTALL_HINT}") from exc

log = logging.getLogger("escalation.acs")

API_VERSION = "2025-09-01"
_DONE: dict[str, MessageStatus] = {"succeeded": "delivered", "failed": "failed", "canceled": "failed"}


@dataclass(slots=True)
class AcsMessage:
    body: dict[str, Any]
    operation_id: str
    tried: bool = False


def _error_text(exc: HttpResponseError) -> str:
    detail = ""
    try:
        payload = json.loads(exc.response.text()) if exc.response is not None else {}
        err = payload.get("error") or {}
        detail = ": ".join(str(p) for p in (err.get("code"), err.get("message")) if p)
    except (ValueError, AttributeError):
        pass
    status = f"{exc.status_code} {exc.reason or ''}".strip()
    return f"Azure Communication Services answered {status}" + (f" ({detail})" if detail else "")


class AcsBackend:
    name = "acs"

    def __init__(self, connection: AcsConnection, *, timeout: float, **client_options: Any) -> None:
        """``client_options`` go to the SDK client (e.g. ``transport=`` for a custom HTTP transport)."""
        self.connection = connection
        self.description = f"Azure Communication Services {connection.endpoint}"
        self._client = EmailClient(
            connection.endpoint,
            AzureKeyCredential(connection.access_key),
            api_version=API_VERSION,
            retry_total=0,
            connection_timeout=timeout,
            read_timeout=timeout,
            **client_options,
        )

    def prepare(self, email: OutgoingEmail, key: str) -> AcsMessage:
        recipient: dict[str, str] = {"address": email.to}
        body: dict[str, Any] = {
            "senderAddress": email.sender,
            "recipients": {"to": [recipient]},
            "content": {"subject": email.subject, "plainText": email.text, "html": email.html},
        }
        if email.headers:
            body["headers"] = dict(email.headers)
        return AcsMessage(body=body, operation_id=str(uuid.uuid4()))

    async def send(self, prepared: AcsMessage) -> str:
        retry, prepared.tried = prepared.tried, True
        try:
            poller = await self._client.begin_send(prepared.body, operation_id=prepared.operation_id, polling=False)
            result = await poller.result()
        except ResourceExistsError as exc:
            if retry:
                # The earlier attempt reached ACS after all (its answer was lost): same operation.
                log.info("ACS already has operation %s; taking the earlier attempt as accepted",
                         prepared.operation_id)
                return prepared.operation_id
            raise DeliveryError(_error_text(exc), transient=False) from exc
        except ClientAuthenticationError as exc:
            raise DeliveryError(_error_text(exc) + "; check the access key", transient=False) from exc
        except HttpResponseError as exc:
            code = exc.status_code or 0
            raise DeliveryError(_error_text(exc), transient=code in (408, 429) or code >= 500) from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise DeliveryError(f"cannot reach Azure Communication Services: {exc}", transient=True) from exc
        except AzureError as exc:
            raise DeliveryError(f"Azure Communication Services error: {exc}", transient=False) from exc
        operation = (result or {}).get("id") or prepared.operation_id
        log.debug("ACS accepted operation %s (%s)", operation, (result or {}).get("status"))
        return str(operation)

    async def poll(self, provider_message_id: str) -> ProviderStatus:
        """GET the operation's status monitor; raises DeliveryError when ACS cannot be asked."""
        request = HttpRequest("GET", f"/emails/operations/{provider_message_id}",
                              params={"api-version": API_VERSION})
        try:
            response = await self._client.send_request(request)
            await response.read()
        except AzureError as exc:
            raise DeliveryError(f"cannot reach Azure Communication Services: {exc}", transient=True) from exc
        if response.status_code != 200:
            detail = response.text()[:300]
            raise DeliveryError(f"Azure Communication Services answered {response.status_code} for operation "
                                f"{provider_message_id}: {detail}", transient=response.status_code >= 500)
        try:
            payload = response.json()
            word = str(payload.get("status", ""))
        except (ValueError, AttributeError):
            raise DeliveryError("Azure Communication Services sent an unreadable operation status",
                                transient=True) from None
        status = _DONE.get(word.lower(), "sent")
        error = ""
        if status == "failed":
            err = payload.get("error") or {}
            error = ": ".join(str(p) for p in (err.get("code"), err.get("message")) if p) or f"operation {word}"
        return ProviderStatus(status=status, provider_status=word, error=error)

    async def check(self) -> None:
        return None  # ACS has no cheap authenticated probe; the first send reports problems

    async def close(self) -> None:
        await self._client.close()
