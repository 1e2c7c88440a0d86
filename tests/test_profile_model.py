"""The profile's parsed form, its rules, masking and env: secrets (store/profile_model.py: no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from msev15.store.profile_model import (
    DEFAULT_PROFILE,
    MASK,
    AgentProfile,
    McpServerSpec,
    ProfileInvalid,
    SecretMissing,
    masked,
    parse_profile,
    pattern_problem,
    resolve_headers,
)


def _problems(data: Any) -> dict[str, str]:
    with pytest.raises(ProfileInvalid) as caught:
        parse_profile(data)
    return {p["field"]: p["message"] for p in caught.value.problems}


def test_an_empty_profile_is_the_default_agent() -> None:
    assert parse_profile({}) == DEFAULT_PROFILE == AgentProfile()
    assert parse_profile({"tools": None, "model": None, "handoff": None, "mcp_servers": None}) == DEFAULT_PROFILE


def test_every_field_is_parsed() -> None:
    parsed = parse_profile({
        "instructions": "Be brief.", "tools": {"allow": ["a_*"], "deny": ["a_b"]}, "approval": ["x"],
        "mcp_servers": [{"name": "crm", "url": "http://127.0.0.1:9/mcp", "headers": {"X-K": "v"}, "tools": ["c*"]},
                        {"name": "kb", "url": "https://kb.example/mcp"}],
        "model": {"name": "m", "api": "responses", "temperature": 1, "max_output_tokens": 5},
        "handoff": {"enabled": False, "timeout_seconds": 60}, "greeting": "Hi"})
    assert parsed == AgentProfile(
        instructions="Be brief.", tools_allow=("a_*",), tools_deny=("a_b",), approval=("x",),
        mcp_servers=(McpServerSpec("crm", "http://127.0.0.1:9/mcp", (("X-K", "v"),), ("c*",)),
                     McpServerSpec("kb", "https://kb.example/mcp")),
        model_name="m", model_api="responses", temperature=1.0, max_output_tokens=5, handoff_enabled=False,
        handoff_timeout_seconds=60, greeting="Hi")
    assert parse_profile({"tools": {"allow": []}}).tools_allow == (), "an empty allow-list: no tools at all"
    assert parse_profile({"approval": []}).approval == (), "an empty approval list: nothing needs approval"


@pytest.mark.parametrize(("pattern", "problem"), [
    ("get_*", None), ("[abc]_x", None), ("[!a]*", None), ("[]]x", None), ("[!]]x", None), ("a]", None),
    ("", "must not be empty"), ("x" * 201, "at most 200"), ("a b", "spaces"), ("a\nb", "spaces"),
    ("[ab", "unbalanced"), ("x[!", "unbalanced"), ("[]", "unbalanced"), (3, "must be a string"),
])
def test_patterns(pattern: object, problem: str | None) -> None:
    found = pattern_problem(pattern)
    assert (found is None) if problem is None else (found is not None and problem in found), found


@pytest.mark.parametrize(("data", "field"), [
    ([], "profile"), ("x", "profile"),
    ({"instructions": 1}, "instructions"), ({"instructions": ""}, "instructions"),
    ({"instructions": " \n\t"}, "instructions"), ({"greeting": "x" * 4001}, "greeting"),
    ({"tools": []}, "tools"), ({"tools": {"allow": "a"}}, "tools.allow"),
    ({"tools": {"allow": ["a"] * 201}}, "tools.allow"),
    ({"approval": {"a": 1}}, "approval"),
    ({"mcp_servers": {}}, "mcp_servers"), ({"mcp_servers": [1]}, "mcp_servers[0]"),
    ({"mcp_servers": [{"url": "https://x.example"}]}, "mcp_servers[0].name"),
    ({"mcp_servers": [{"name": "a b", "url": "https://x.example"}]}, "mcp_servers[0].name"),
    ({"mcp_servers": [{"name": "a"}]}, "mcp_servers[0].url"),
    ({"mcp_servers": [{"name": "a", "url": "javascript:alert(1)"}]}, "mcp_servers[0].url"),
    ({"mcp_servers": [{"name": "a", "url": "file:///etc/passwd"}]}, "mcp_servers[0].url"),
    ({"mcp_servers": [{"name": "a", "url": "http://"}]}, "mcp_servers[0].url"),
    ({"mcp_servers": [{"name": "a", "url": "http://h:99999/"}]}, "mcp_servers[0].url"),
    ({"mcp_servers": [{"name": "a", "url": "http://169.254.169.254/latest/meta-data/"}]}, "mcp_servers[0].url"),
    ({"mcp_servers": [{"name": "a", "url": "http://[::ffff:169.254.169.254]/"}]}, "mcp_servers[0].url"),
    ({"mcp_servers": [{"name": "a", "url": "http://[fe80::1]:80/"}]}, "mcp_servers[0].url"),
    ({"mcp_servers": [{"name": "a", "url": "http://0.0.0.0:8080/mcp"}]}, "mcp_servers[0].url"),
    ({"mcp_servers": [{"name": "a", "url": "http://h/ x"}]}, "mcp_servers[0].url"),
    ({"mcp_servers": [{"name": "a", "url": "http://h", "headers": []}]}, "mcp_servers[0].headers"),
    ({"mcp_servers": [{"name": "a", "url": "http://h", "headers": {"X": 1}}]}, "mcp_servers[0].headers.X"),
    ({"mcp_servers": [{"name": "a", "url": "http://h", "headers": {"X": "a\r\nEvil: 1"}}]},
     "mcp_servers[0].headers.X"),
    ({"mcp_servers": [{"name": "a", "url": "http://h", "headers": {"Host": "x"}}]}, "mcp_servers[0].headers.Host"),
    ({"mcp_servers": [{"name": "a", "url": "http://h", "headers": {"X": "env:AZURE_OPENAI_API_KEY"}}]},
     "mcp_servers[0].headers.X"),
    ({"mcp_servers": [{"name": "a", "url": "http://h", "headers": {"X": "env:MSEV15_TENANT_SECRET_"}}]},
     "mcp_servers[0].headers.X"),
    ({"mcp_servers": [{"name": "a", "url": "http://h", "headers": {"X": "env:MSEV15_TENANT_SECRET_A-B"}}]},
     "mcp_servers[0].headers.X"),
    ({"mcp_servers": [{"name": "a", "url": "http://h", "headers": {"X": "env:msev15_tenant_secret_A"}}]},
     "mcp_servers[0].headers.X"),
    ({"mcp_servers": [{"name": "a", "url": "http://h", "headers": {"X": MASK}}]}, "mcp_servers[0].headers.X"),
    ({"mcp_servers": [{"name": "a", "url": "http://h", "headers": {"X": "1", "x": "2"}}]},
     "mcp_servers[0].headers.x"),
    ({"mcp_servers": [{"name": "a", "url": "http://h", "headers": {f"H{i}": "v" for i in range(21)}}]},
     "mcp_servers[0].headers"),
    ({"mcp_servers": [{"name": "a", "url": "http://h"}, {"name": "a", "url": "http://i"}]}, "mcp_servers[1].name"),
    ({"mcp_servers": [{"name": f"s{i}", "url": "http://h"} for i in range(21)]}, "mcp_servers"),
    ({"model": "gpt"}, "model"), ({"model": {"name": ""}}, "model.name"), ({"model": {"api": "soap"}}, "model.api"),
    ({"model": {"temperature": True}}, "model.temperature"), ({"model": {"temperature": -0.1}}, "model.temperature"),
    ({"model": {"max_output_tokens": 1.5}}, "model.max_output_tokens"),
    ({"handoff": {"timeout_seconds": True}}, "handoff.timeout_seconds"), ({"handoff": {"x": 1}}, "handoff.x"),
    ({"instructions": "x" * 32_001}, "instructions"), ({"instructions": "x" * 200_000}, "instructions"),
    ({"greeting": float("nan")}, "profile"),
])
def test_each_bad_field_is_named(data: Any, field: str) -> None:
    assert field in _problems(data)


def test_the_whole_profile_is_bounded() -> None:
    assert "profile" in _problems({"tools": {"allow": ["p" * 200] * 200, "deny": ["q" * 200] * 200},
                                   "approval": ["r" * 200] * 200, "mcp_servers": [
                                       {"name": f"s{i}", "url": "http://h", "tools": ["t" * 200] * 200}
                                       for i in range(20)]})
    assert parse_profile({"instructions": "x" * 32_000}).instructions == "x" * 32_000


def test_problems_never_echo_a_value() -> None:
    problems = _problems({"mcp_servers": [{"name": "a", "url": "ftp://user:pw-zzq@h",
                                           "headers": {"X": "env:VALUE_ZZQ", "Y": 5}}],
                          "model": {"api": "soap-zzq"}})
    assert "zzq" not in repr(problems).lower(), problems


def test_masked_hides_inline_values_only_and_copies() -> None:
    stored: dict[str, Any] = {"mcp_servers": [{"name": "a", "url": "http://h",
                               "headers": {"Authorization": "Bearer s3cret", "X": "env:MSEV15_TENANT_SECRET_A"}},
                              {"name": "b", "url": "http://h"}],
              "instructions": "keep"}
    shown = masked(stored)
    assert shown["mcp_servers"][0]["headers"] == {"Authorization": MASK, "X": "env:MSEV15_TENANT_SECRET_A"}
    assert shown["instructions"] == "keep" and shown["mcp_servers"][1] == {"name": "b", "url": "http://h"}
    assert stored["mcp_servers"][0]["headers"]["Authorization"] == "Bearer s3cret", "the original is untouched"
    junk: dict[str, Any] = {"mcp_servers": [{"headers": {"X": "env:HOME", "Y": 7}}, "odd"]}
    assert masked(junk)["mcp_servers"][0]["headers"] == {"X": MASK, "Y": MASK}, "unvalidated input: mask anything odd"


def test_resolve_headers_reads_env_references_when_connecting() -> None:
    spec = parse_profile({"mcp_servers": [{"name": "crm", "url": "http://h", "headers": {
        "Authorization": "env:MSEV15_TENANT_SECRET_CRM", "X-Client": "acme"}}]}).mcp_servers[0]
    assert resolve_headers(spec, {"MSEV15_TENANT_SECRET_CRM": "Bearer t0k"}) == {
        "Authorization": "Bearer t0k", "X-Client": "acme"}
    lower = parse_profile({"mcp_servers": [{"name": "crm", "url": "http://h", "headers": {
        "Authorization": "env:MSEV15_TENANT_SECRET_acme_crm"}}]}).mcp_servers[0]  # the prefix is what counts
    assert resolve_headers(lower, {"MSEV15_TENANT_SECRET_acme_crm": "k"}) == {"Authorization": "k"}
    with pytest.raises(SecretMissing) as caught:
        resolve_headers(spec, {"OTHER": "x"})
    assert "MSEV15_TENANT_SECRET_CRM" in str(caught.value) and "crm" in str(caught.value)
    assert "t0k" not in repr(spec) and "acme" not in repr(spec), "a spec's repr names headers, never values"
