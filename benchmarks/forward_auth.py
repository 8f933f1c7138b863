"""Forward-auth over HTTP against nginx answering ``return 200``, measured in one run with wrk.

Run with ``scripts/bench forward-auth``. The servers (nginx with one worker, authgate with
one worker) are pinned to one core and wrk to the other. Cases:

  (a) nginx ``return 200``                       — the bare baseline
  (b) authgate /v1/authorize, valid key, 10,000 principals loaded, audit ledger on
  (c) authgate /v1/authorize, unknown key (401)

For authgate it also reports server CPU µs per request (utime + stime from /proc over the
run) and RSS. Budget (DESIGN.md §5): (b) ≥ 50 % of (a).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from authgate.config import load_settings
from authgate.identity.ids import Kind
from authgate.identity.keys import new_key
from authgate.wiring import build_services

BUDGET = 0.5
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start") from None
            time.sleep(0.05)


def missing_tools(*tools: str) -> bool:
    """Say (on stderr) which of ``tools`` is not installed, and with which package; True
    when one is missing."""
    packages = {"taskset": "util-linux"}
    for tool in tools:
        if shutil.which(tool) is None:
            print(
                f"{tool} is not installed (apt-get install {packages.get(tool, tool)})",
                file=sys.stderr,
            )
            return True
    return False


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wrk(
    url: str,
    headers: list[str],
    seconds: int,
    connections: int,
    cpu: str,
    script: Path | None = None,
) -> dict[str, float]:
    cmd = ["taskset", "-c", cpu, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    for header in headers:
        cmd += ["-H", header]
    out = subprocess.run([*cmd, url], check=True, capture_output=True, text=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    pct = {p: _ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+([\d.]+\w+)", out, re.M)}
    return {
        "rps": rate,
        "requests": total,
        "non_2xx": int(non2xx[1]) if non2xx else 0,
        "p50_ms": pct["50"],
        "p99_ms": pct["99"],
    }


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def nginx_temps(folder: Path) -> str:
    """nginx's temp-path directives, all under ``folder`` (it runs unprivileged there)."""
    return "".join(
        f"{n}_temp_path {folder}/{n}; "
        for n in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def print_wrk_table(rows: list[tuple[str, dict[str, float]]], width: int) -> None:
    """The wrk results table: one row per case, server CPU and RSS where measured."""
    columns = ("req/s", 10), ("P50 ms", 9), ("P99 ms", 9), ("non-2xx", 9), ("CPU us/req", 12)
    print(f"{'case':<{width}}" + "".join(f"{n:>{w}}" for n, w in columns) + f"{'RSS MiB':>9}")
    for name, r in rows:
        cpu = f"{r['cpu_us_per_request']:.1f}" if "cpu_us_per_request" in r else "-"
        rss = f"{r['rss_mib']:.0f}" if "rss_mib" in r else "-"
        print(
            f"{name:<{width}}{r['rps']:>10,.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{r['non_2xx']:>9}{cpu:>12}{rss:>9}"
        )


def nginx_baseline(folder: Path, seconds: int, connections: int) -> dict[str, float]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    temps = nginx_temps(folder)
    conf = folder / "nginx.conf"
    conf.write_text(
        f"daemon off; worker_processes 1; pid {folder}/nginx.pid; error_log {folder}/e.log;"
        f"events {{ worker_connections 4096; }} http {{ access_log off; {temps}"
        f'server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok"; }} }} }}'
    )
    proc = subprocess.Popen(["taskset", "-c", "0", nginx, "-c", str(conf), "-p", str(folder)])
    try:
        wait_for(port, proc)
        wrk(f"http://127.0.0.1:{port}/", [], 2, connections, "1")  # warm-up
        return wrk(f"http://127.0.0.1:{port}/", [], seconds, connections, "1")
    finally:
        proc.terminate()
        proc.wait()


async def populate(config: Path, principals: int) -> str:
    """Create ``principals`` agents straight in the store; return one valid key."""
    services = await build_services(load_settings(config, {}))
    identity = services.identity
    key = ""
    for i in range(principals):
        p = await identity.create_principal(Kind.AGENT, f"bench-{i}", 2)
        if i == principals // 2:
            key = (await identity.issue_key(p.id)).key
    await services.close()
    return key


def start_authgate(
    folder: Path, principals: int, extra_env: dict[str, str], cpu: str = "0"
) -> tuple[subprocess.Popen[bytes], int, str, Path]:
    """``authgate init`` in ``folder``/ag, ``principals`` agents in the store, then
    ``authgate serve`` (one worker, pinned to ``cpu``, limits high enough that a run measures
    allows). Returns the process, its port, one valid key and the config file."""
    authgate = str(Path(sys.executable).parent / "authgate")
    subprocess.run([authgate, "init", str(folder / "ag")], check=True, capture_output=True)
    config = folder / "ag" / "authgate.toml"
    key = asyncio.run(populate(config, principals))
    port = free_port()
    env = {
        **os.environ,
        "AUTHGATE_CONFIG": str(config),
        "AUTHGATE_SERVER__PORT": str(port),
        "AUTHGATE_CONTROL__ENABLED": "false",
        **extra_env,
    }
    for level in range(6):
        env[f"AUTHGATE_TIERS__{level}__REQUESTS_PER_MINUTE"] = "100000000"
        env[f"AUTHGATE_TIERS__{level}__BURST"] = "100000000"
    proc = subprocess.Popen(
        ["taskset", "-c", cpu, authgate, "serve"], env=env, stdout=subprocess.DEVNULL
    )
    return proc, port, key, config


def authgate_runs(
    folder: Path, principals: int, seconds: int, connections: int, extra_env: dict[str, str]
) -> dict[str, dict[str, float]]:
    """Start authgate serve (one worker, CPU 0) over ``principals`` and run wrk (CPU 1)
    with a valid and an unknown key."""
    proc, port, key, _ = start_authgate(folder, principals, extra_env)
    out: dict[str, dict[str, float]] = {}
    try:
        wait_for(port, proc)
        url = f"http://127.0.0.1:{port}/v1/authorize/v1/models"
        wrk(url, [f"X-API-Key: {key}"], 2, connections, "1")  # warm-up
        for name, header in (("valid", key), ("invalid", new_key()[0])):
            before = cpu_seconds(proc.pid)
            run = wrk(url, [f"X-API-Key: {header}"], seconds, connections, "1")
            used = cpu_seconds(proc.pid) - before
            run["cpu_us_per_request"] = used * 1e6 / max(1, run["requests"])
            run["rss_mib"] = rss_mib(proc.pid)
            out[name] = run
    finally:
        proc.terminate()
        proc.wait()
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="forward-auth vs nginx return 200")
    parser.add_argument("--principals", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if missing_tools("wrk", "taskset"):
        return 2
    results: dict[str, Any] = {"connections": args.connections, "seconds": args.seconds}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results["nginx"] = nginx_baseline(folder, args.seconds, args.connections)
        runs = authgate_runs(folder, args.principals, args.seconds, args.connections, {})
        results["authgate_valid"] = runs["valid"]
        results["authgate_invalid"] = runs["invalid"]
    base = results["nginx"]["rps"]
    ratio = results["authgate_valid"]["rps"] / base
    results["ratio_valid_vs_nginx"] = ratio
    results["within_budget"] = ratio >= BUDGET
    if args.json:
        print(json.dumps(results, indent=2))
        return 0 if ratio >= BUDGET else 1
    print(
        f"forward-auth benchmark — wrk -t1 -c{args.connections} -d{args.seconds}s, "
        f"server on CPU 0, wrk on CPU 1, {args.principals} principals loaded\n"
    )
    print_wrk_table(
        [
            ("(a) nginx return 200", results["nginx"]),
            ("(b) authgate, valid key", results["authgate_valid"]),
            ("(c) authgate, unknown key (401)", results["authgate_invalid"]),
        ],
        38,
    )
    print(
        f"\n(b)/(a) = {ratio:.0%}  (budget >= {BUDGET:.0%}): {'yes' if ratio >= BUDGET else 'NO'}"
    )
    return 0 if ratio >= BUDGET else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
