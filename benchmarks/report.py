"""Writing a run's results: ``latest.json``, a Markdown report and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _row(*cells: Any) -> str:
    return "| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in cells) + " |"


def _load_rows(title: str, data: dict[str, Any]) -> list[str]:
    rows = []
    for side in ("reference", "service"):
        part = data.get(side)
        if not part:
            continue
        lat, server = part["latency_ms"], part.get("server", {})
        rows.append(_row(title if side == "reference" else "", side, part["rate_per_s"], lat["p50"], lat["p95"],
                         lat["p99"], part["errors"], server.get("cpu_cores"), server.get("cpu_ms_per_request"),
                         server.get("rss_peak_mib")))
    ratios = data.get("ratio")
    if ratios:
        rows.append(_row("", "*service / reference*", ratios.get("rate"), "", "", ratios.get("p99"), "", "",
                         ratios.get("cpu_ms_per_request"), ""))
    return rows


def render_markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    s = results["scenarios"]
    out = [
        "# Benchmark results",
        "",
        (f"`{results['command']}` — {results['generated_at']}, {results['elapsed_s']:.0f} s. "
        f"{env['cpus']} cores, {env['pinning']}; load average {env['loadavg_start']} → {env['loadavg_end']}. "
        f"Load generator: {env['load_generator']}."),
        "",
        ("The machines are shared and noisy: compare the service with the reference measured in the same run "
        "(the ratios), not absolute numbers across runs."),
        "",
        "## Targets",
        "",
        "| # | Target | Measured | Limit | Result |",
        "|---|---|---|---|---|",
    ]
    for t in results["targets"]:
        out.append(_row(t["id"], t["target"], f"{_fmt(t['value'], 3)} {t['unit']}".strip(),
                        f"{t['op']} {t['limit']:g} {t['unit']}".strip(), f"**{t['status']}**"))
    if results.get("reported"):
        out += ["", "Reported without a limit (absolute times on a shared machine; no reference serves these):", "",
                "| # | Measurement | Measured |", "|---|---|---|"]
        out += [_row(r["id"], r["text"], f"{_fmt(r['value'], 3)} {r['unit']}".strip()) for r in results["reported"]]
    out += ["", "## Throughput and latency", "",
            "| Scenario | Server | Rate /s | p50 ms | p95 ms | p99 ms | Errors | Server CPU (cores) "
            "| Server CPU ms/req | Server RSS peak MiB |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    if "1_chat" in s:
        out += _load_rows(f"1. Chat, {s['1_chat']['connections']} connections", s["1_chat"])
    if "2_streaming" in s:
        out += _load_rows(f"2. Streaming, {s['2_streaming']['tokens']} tokens", s["2_streaming"])
    if "7_chat_defaults" in s:
        out += _load_rows("7. Chat, `msev15 serve` on the defaults", s["7_chat_defaults"])
    if "6_relay" in s:
        relay = s["6_relay"]
        for api in ("chat", "responses"):
            if api in relay:
                out += _load_rows(f"6. Relay via openai, LLM_API={api}, {relay['tokens']} tokens",
                                  {"reference": relay["reference"], "service": relay[api]["service"],
                                   "ratio": relay[api]["ratio"]})
    if "5_health_under_load" in s:
        out += _load_rows("5. GET /health during 1", s["5_health_under_load"])
    if s.get("load_generator_cpu_cores"):
        busiest = max(s["load_generator_cpu_cores"].values())
        out += ["", f"The load generator used at most {busiest:.2f} of a core in these phases "
                    "(it is not the bottleneck)."]
    if s.get("gc_pauses"):
        out += ["", "Garbage-collector pauses in the servers over scenarios 1, 2 and 5 (full collections, gen2):", "",
                "| Server | Collections | Total ms | Longest ms (wall) | Longest ms (CPU) |", "|---|---|---|---|---|"]
        for side, gens in s["gc_pauses"].items():
            gen2 = gens.get("gen2", {})
            out.append(_row(side, gen2.get("collections"), gen2.get("total_ms"), gen2.get("max_ms"),
                            gen2.get("max_cpu_ms")))
    if "2_streaming" in s:
        ttft = s["2_streaming"]["ttft_one_connection_ms"]
        out += ["", ("Time to first token, one connection (no queueing); the model's own is "
                f"{ttft['model']:g} ms:"), "", "| Server | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|"]
        for side in ("reference", "service"):
            out.append(_row(side, ttft[side]["p50"], ttft[side]["p95"], ttft[side]["p99"]))
    if "3_concurrency" in s:
        c = s["3_concurrency"]
        out += ["", f"## Concurrency: {c['streams']:,} open streams, a token every {c['token_delay_s']:g} s", "",
                "| Server | Completed | Peak open | Errors | RSS idle MiB | RSS all open MiB "
                "| KiB per open stream | Stream p50 s |",
                "|---|---|---|---|---|---|---|---|"]
        for side in ("reference", "service"):
            d = c[side]
            p50 = d["latency_ms"]["p50"]
            out.append(_row(side, d["completed"], d.get("peak_open"), d["errors"], d["rss_idle_mib"],
                            d.get("rss_all_open_mib"), d.get("rss_per_open_stream_kib"), p50 and p50 / 1000))
        a = c["active_turns"]
        out += ["", (f"Active turns: {a['completed']:,} of {a['turns']:,} completed, {a['errors']} errors, in "
                f"{a['wall_s']:.2f} s (each turn {a['model_turn_s']:g} s of model time; effective concurrency "
                f"{_fmt(a['effective_concurrency'], 1)}). The service ran with AGENT_MAX_CONCURRENT_TURNS="
                f"{c['service_max_concurrent_turns']:,} for the open streams and {a['service_max_concurrent_turns']:,} "
                "for the active turns.")]
    if "4_sessions" in s:
        d = s["4_sessions"]
        seeded = d["seeded"]
        out += ["", f"## Sessions: {seeded['sessions']:,} × {seeded['messages_per_session']} messages", "",
                (f"RSS grew {d['rss_growth_mib']:,.1f} MiB while seeding ({seeded['text_bytes'] / 2**20:,.1f} MiB of "
                f"message text): **{d['rss_per_session_beyond_text_bytes']:,.0f} bytes per session** beyond the text."),
                "", "| Operation | Requests | p50 ms | p95 ms | p99 ms | Errors |", "|---|---|---|---|---|---|"]
        rows = [("history", d["history"])]
        rows += [(f"list limit=50 offset={v['offset']:,}", v) for v in d["list_limit_50"].values()]
        rows += [(f"delete ({k})", v) for k, v in d["delete"].items()]
        for name, v in rows:
            lat = v["latency_ms"]
            out.append(_row(name, v["completed"], lat["p50"], lat["p95"], lat["p99"], v["errors"]))
    if "5_startup" in s:
        st = s["5_startup"]
        out += ["", "## Start-up", "", (f"`{st['command']}` to the first 200 from /health: "
                f"{', '.join(f'{x:.2f} s' for x in st['runs_s'])} (median {_fmt(st['median_s'])} s).")]
    if results.get("notes"):
        out += ["", "## Notes", ""] + [f"- {n}" for n in results["notes"]]
    return "\n".join(out) + "\n"


def write_results(results: dict[str, Any], out_dir: Path, name: str = "latest") -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(results), encoding="utf-8")
    return json_path, md_path


def write_chart(results: dict[str, Any], path: Path) -> Path:
    """Latency percentiles by scenario and RSS curves (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, curves = results["scenarios"], results.get("curves", {})
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0][0]
    groups = [(k, label) for k, label in (("1_chat", "chat"), ("2_streaming", "streaming"),
                                          ("5_health_under_load", "health under load")) if k in s]
    width = 0.13
    for g, (key, _label) in enumerate(groups):
        for i, side in enumerate(("reference", "service")):
            for j, q in enumerate(("p50", "p95", "p99")):
                value = s[key][side]["latency_ms"][q] or 0
                x = g + (i * 3 + j - 2.5) * width
                ax.bar(x, value, width,
                       color=("#8fb3d9", "#3a6ea5", "#1d3f66", "#f2b179", "#e07b24", "#9a4a0c")[i * 3 + j],
                       label=f"{side} {q}" if g == 0 else None)
    ax.set_xticks(range(len(groups)), [label for _, label in groups])
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency percentiles under load")
    if groups:
        ax.legend(fontsize=7, ncol=2)
    _curves(axes[0][1], curves, "streams/", "RSS during the open-streams burst", "seconds since the burst started")
    _curves(axes[1][0], curves, ("chat/", "streaming/"), "RSS during chat and streaming phases",
            "seconds since the run started")
    ax = axes[1][1]
    if "4_sessions" in s:
        d = s["4_sessions"]
        names = (["history"] + [f"list @{v['offset']:,}" for v in d["list_limit_50"].values()]
                 + [f"delete {k}" for k in d["delete"]])
        parts = [d["history"], *d["list_limit_50"].values(), *d["delete"].values()]
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], [p["latency_ms"]["p50"] or 0 for p in parts], 0.4, label="p50", color="#3a6ea5")
        ax.bar([x + 0.2 for x in xs], [p["latency_ms"]["p99"] or 0 for p in parts], 0.4, label="p99", color="#e07b24")
        ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"Sessions: {d['seeded']['sessions']:,} × {d['seeded']['messages_per_session']} messages")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _curves(ax: Any, curves: dict[str, list[list[float]]], prefix: str | tuple[str, ...], title: str,
            xlabel: str) -> None:
    for name, points in sorted(curves.items()):
        if name.startswith(prefix) and points:
            xs, ys = zip(*points, strict=True)
            color = "#3a6ea5" if "reference" in name else "#e07b24"
            style = ":" if name.startswith("streaming/") else "-"
            ax.plot(xs, ys, style, color=color, linewidth=1.4, label=name.rsplit("/round", 1)[0])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("RSS (MiB)")
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        unique = dict(zip(labels, handles, strict=True))  # one entry per server and phase, not per round
        ax.legend(unique.values(), unique.keys(), fontsize=7)
