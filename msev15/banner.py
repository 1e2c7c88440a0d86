"""The welcome banner and the goodbye lines, with the service's real values."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from msev15 import __version__
from msev15.config import Settings
from msev15.topology import store_label

_WIDTH = 62


def _boxed(text: str, indent: int) -> str:
    # The spec's box is not centred exactly; keep its indents.
    return "║" + (" " * indent + text).ljust(_WIDTH) + "║"


def banner(settings: Settings, *, local_tools: int, mcp_tools: int,
           mcp_status: dict[str, tuple[str, bool]], warnings: Iterable[str], model_endpoint: str = "") -> str:
    """``mcp_status`` maps a label to (url, connected); ``model_endpoint`` is where the model is called."""
    cors = f"Enabled ({', '.join(settings.cors_origins)})" if settings.enable_cors else "Disabled"
    rate = f"Enabled ({settings.rate_limit_per_minute}/min per IP)" if settings.enable_rate_limiting else "Disabled"
    model = settings.model_name if settings.provider != "offline" else "offline assistant (built in, no network)"
    host = "localhost" if settings.server_host in ("0.0.0.0", "::", "") else settings.server_host
    lines = [
        "╔" + "═" * _WIDTH + "╗",
        _boxed("MSEv15E2E Service", 20),
        _boxed(f"Version {__version__}", 23),
        "╚" + "═" * _WIDTH + "╝",
        "",
        "Server Configuration:",
        f"  • Host: {settings.server_host}",
        f"  • Port: {settings.server_port}",
        f"  • Log Level: {settings.log_level}",
        f"  • CORS: {cors}",
        f"  • Rate Limiting: {rate}",
        f"  • Authentication: {settings.auth_mode}",
        "",
        "Agent Configuration:",
        f"  • Model: {model}",
        f"  • Provider: {settings.provider}",
    ]
    if settings.provider != "offline":
        api = "Responses API" if settings.llm_api == "responses" else "Chat Completions"
        auth = ("Microsoft Entra ID (DefaultAzureCredential)" if settings.azure_auth == "entra-id" else "API key"
                ) if settings.provider == "azure" else ("API key" if settings.openai_api_key else "no key")
        lines.append(f"  • Model API: {api}, auth: {auth}")
        if model_endpoint:
            lines.append(f"  • Model endpoint: {model_endpoint}")
    lines += [
        f"  • Tools: {local_tools + mcp_tools} (MCP {mcp_tools} + Local {local_tools})",
    ]
    for label, (url, connected) in mcp_status.items():
        mark = "[✓ Connected]" if connected else "[⚠ Unavailable]"
        lines.append(f"  • {label}: {url} {mark}")
    lines.append(f"  • Sessions: {store_label(settings)}")
    lines += [
        "",
        "Logging:",
        f"  • File: {settings.log_file_path} ({'Enabled' if settings.log_to_file else 'Disabled'})",
        f"  • Max Size: {settings.log_max_size_mb}MB",
        f"  • Backups: {settings.log_backup_count}",
        "",
    ]
    warnings = list(warnings)
    if warnings:
        lines.append("Warnings:")
        lines += [f"  ⚠ {w}" for w in warnings]
        lines.append("")
    lines += ["Starting server... ✓", f"API Documentation: http://{host}:{settings.server_port}/docs"]
    return "\n".join(lines)


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def security_warnings(settings: Settings) -> list[str]:
    """What the banner says about an open door (the service still starts: none is the spec's default)."""
    found = []
    if settings.auth_mode == "none" and not is_loopback(settings.server_host):
        found.append(f"AUTH_MODE=none on {settings.server_host}: anyone who can reach this port can read and "
                     "change every tenant's data (the tenant is whatever the caller sends); set AUTH_MODE=api_key "
                     "or jwt, or bind SERVER_HOST=127.0.0.1")
    for name, url, token in (("MCP_SERVER_URL", settings.mcp_server_url, settings.mcp_auth_token),
                             ("ESCALATION_MCP_URL", settings.escalation_mcp_url,
                              settings.escalation_mcp_auth_token or settings.mcp_auth_token)):
        host = urlsplit(url).hostname or ""
        if url and not token and not is_loopback(host):
            found.append(f"{name} points at {host} but no MCP auth token is set: that server cannot tell this "
                         "service from any other caller (set MCP_AUTH_TOKEN)")
    return found
