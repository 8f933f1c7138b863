"""Proxying with auth against nginx + Lua doing the same job, measured in one run.

Run with ``scripts/bench proxy``. The upstream is nginx (one worker) answering a ~300-byte
JSON body. Cases, each with wrk -t1 for ``--seconds``:

  (a) wrk straight to the upstream                                  — the bare baseline
  (b) nginx + Lua (Debian libnginx-mod-http-lua, one worker): API-key lookup in a Lua table
      of ``--principals`` keys, ``limit_req`` per key, ``proxy_pass`` with keep-alive
  (c) authgate (one worker): API key over ``--principals`` principals, tier policy, GCRA,
      audit ledger on, proxy with keep-alive

The front (nginx + Lua or authgate) runs on CPU 0; the upstream and wrk share CPU 1, the
same for (b) and (c). Budget (DESIGN.md §5): (c) ≥ 50 % of (b) in req/s.

Then the latency authgate adds: an open-loop client sends ``--rate`` requests per second
(fixed schedule, latency measured from the scheduled send, so a stall is not hidden) for
``--latency-seconds``, straight to the upstream and through authgate; budget: at most
0.5 ms added at P50 and 2 ms at P99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.forward_auth import (
    cpu_seconds,
    free_port,
    missing_tools,
    nginx_temps,
    print_wrk_table,
    rss_mib,
    start_authgate,
    wait_for,
    wrk,
)

BUDGET_RATIO = 0.5
BUDGET_P50_MS = 0.5
BUDGET_P99_MS = 2.0
LUA_MODULES = Path("/usr/lib/nginx/modules")
BODY = json.dumps(
    {
        "object": "list",
        "data": [
            {"id": f"model-{i}", "object": "model", "created": 1700000000, "owned_by": "bench"}
            for i in range(3)
        ],
    }
)


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def start_nginx(folder: Path, name: str, http_block: str, cpu: str, modules: str = "") -> Any:
    work = folder / name
    work.mkdir()
    conf = work / "nginx.conf"
    conf.write_text(
        f"{modules} daemon off; worker_processes 1; pid {work}/nginx.pid; "
        f"error_log {work}/error.log; events {{ worker_connections 4096; }} "
        f"http {{ access_log off; {nginx_temps(work)} {http_block} }}"
    )
    return subprocess.Popen(
        ["taskset", "-c", cpu, nginx_binary(), "-c", str(conf), "-p", str(work)]
    )


def upstream_block(port: int) -> str:
    body = BODY.replace("'", "\\'")
    return (
        f"server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000; "
        f"location / {{ default_type application/json; return 200 '{body}'; }} }}"
    )


def lua_block(port: int, upstream_port: int, keys_file: Path) -> str:
    return f"""
    lua_shared_dict keys 16m;
    limit_req_zone $http_x_api_key zone=perkey:16m rate=100000r/s;
    init_by_lua_block {{
        local keys = ngx.shared.keys
        for line in io.lines("{keys_file}") do
            local key, principal = line:match("^(%S+) (%S+)$")
            keys:set(key, principal)
        end
    }}
    upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 1000000;
        location / {{
            limit_req zone=perkey burst=100000 nodelay;
            access_by_lua_block {{
                local key = ngx.var.http_x_api_key
                local principal = key and ngx.shared.keys:get(key)
                if not principal then return ngx.exit(401) end
                ngx.req.clear_header("X-API-Key")
                ngx.req.set_header("X-Auth-Principal", principal)
            }}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_pass http://backend;
        }}
    }}
    """


def start_proxy(folder: Path, principals: int, upstream_port: int) -> tuple[Any, int, str]:
    env = {"AUTHGATE_UPSTREAMS__DEFAULT__URLS": f'["http://127.0.0.1:{upstream_port}"]'}
    proc, port, key, _ = start_authgate(folder, principals, env)
    return proc, port, key


def family(pid: int) -> list[int]:
    """A process and its children (nginx's master and its worker)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return [pid, *kids]


def measure(
    url: str, key: str, seconds: int, connections: int, pid: int | None
) -> dict[str, float]:
    headers = [f"X-API-Key: {key}"] if key else []
    wrk(url, headers, 2, connections, "1")  # warm-up
    pids = family(pid) if pid else []
    before = sum(cpu_seconds(p) for p in pids)
    run = wrk(url, headers, seconds, connections, "1")
    if pids:
        used = sum(cpu_seconds(p) for p in pids) - before
        run["cpu_us_per_request"] = used * 1e6 / max(1, run["requests"])
        run["rss_mib"] = sum(rss_mib(p) for p in pids)
    return run


async def open_loop(port: int, key: str, rate: int, seconds: float) -> list[float]:
    """Latencies (ms) of requests sent on a fixed schedule over a pool of connections."""
    request = (
        "GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        + (f"x-api-key: {key}\r\n" if key else "")
        + "\r\n"
    ).encode()
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(16):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    loop = asyncio.get_running_loop()

    async def one(scheduled: float) -> None:
        reader, writer = await pool.get()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        latencies.append((loop.time() - scheduled) * 1000)
        pool.put_nowait((reader, writer))

    start = loop.time() + 0.1
    total = int(rate * seconds)
    tasks = []
    for i in range(total):
        at = start + i / rate
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(at)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait()[1].close()
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="proxying: authgate vs nginx + Lua")
    parser.add_argument("--principals", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if missing_tools("wrk", "taskset"):
        return 2
    if not (LUA_MODULES / "ngx_http_lua_module.so").exists():
        print(
            "nginx's Lua module is missing: apt-get install nginx libnginx-mod-http-lua",
            file=sys.stderr,
        )
        return 2
    results: dict[str, Any] = {"connections": args.connections, "seconds": args.seconds}
    procs: list[Any] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        try:
            up_port = free_port()
            upstream = start_nginx(folder, "upstream", upstream_block(up_port), "1")
            procs.append(upstream)
            wait_for(up_port, upstream)
            results["upstream"] = measure(
                f"http://127.0.0.1:{up_port}/v1/models", "", args.seconds, args.connections, None
            )

            ag, ag_port, key = start_proxy(folder, args.principals, up_port)
            procs.append(ag)
            wait_for(ag_port, ag)
            keys_file = folder / "keys.txt"
            lines = [f"bench-key-{i} bench-{i}" for i in range(args.principals)]
            keys_file.write_text("\n".join([*lines, f"{key} bench-principal"]) + "\n")
            lua_port = free_port()
            modules = "".join(
                f"load_module {LUA_MODULES / m};"
                for m in ("ndk_http_module.so", "ngx_http_lua_module.so")
            )
            lua = start_nginx(folder, "lua", lua_block(lua_port, up_port, keys_file), "0", modules)
            procs.append(lua)
            wait_for(lua_port, lua)
            url = "http://127.0.0.1:{}/v1/models"
            results["nginx_lua"] = measure(
                url.format(lua_port), key, args.seconds, args.connections, lua.pid
            )
            lua.terminate()
            lua.wait()
            results["authgate"] = measure(
                url.format(ag_port), key, args.seconds, args.connections, ag.pid
            )
            time.sleep(0.5)
            direct = asyncio.run(open_loop(up_port, "", args.rate, args.latency_seconds))
            through = asyncio.run(open_loop(ag_port, key, args.rate, args.latency_seconds))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait()
    ratio = results["authgate"]["rps"] / results["nginx_lua"]["rps"]
    lat = {
        "rate": args.rate,
        "direct_p50_ms": percentile(direct, 50),
        "direct_p99_ms": percentile(direct, 99),
        "authgate_p50_ms": percentile(through, 50),
        "authgate_p99_ms": percentile(through, 99),
    }
    lat["added_p50_ms"] = lat["authgate_p50_ms"] - lat["direct_p50_ms"]
    lat["added_p99_ms"] = lat["authgate_p99_ms"] - lat["direct_p99_ms"]
    within = (
        ratio >= BUDGET_RATIO
        and lat["added_p50_ms"] <= BUDGET_P50_MS
        and lat["added_p99_ms"] <= BUDGET_P99_MS
    )
    results.update(ratio_vs_nginx_lua=ratio, latency=lat, within_budget=within)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0 if within else 1
    print(
        f"proxy benchmark — wrk -t1 -c{args.connections} -d{args.seconds}s; front on CPU 0, "
        f"upstream nginx and wrk on CPU 1; {args.principals} keys loaded\n"
    )
    print_wrk_table(
        [
            ("(a) upstream nginx, direct", results["upstream"]),
            ("(b) nginx + Lua key-auth, limit_req, proxy", results["nginx_lua"]),
            ("(c) authgate: key, tier, GCRA, audit, proxy", results["authgate"]),
        ],
        40,
    )
    ok = "yes" if ratio >= BUDGET_RATIO else "NO"
    print(f"\n(c)/(b) = {ratio:.0%}  (budget >= {BUDGET_RATIO:.0%}): {ok}")
    print(
        f"\nopen loop at {args.rate}/s for {args.latency_seconds:.0f} s:"
        f"  direct P50 {lat['direct_p50_ms']:.3f} ms, P99 {lat['direct_p99_ms']:.3f} ms;"
        f"  through authgate P50 {lat['authgate_p50_ms']:.3f} ms,"
        f" P99 {lat['authgate_p99_ms']:.3f} ms"
    )
    p50_ok = "yes" if lat["added_p50_ms"] <= BUDGET_P50_MS else "NO"
    p99_ok = "yes" if lat["added_p99_ms"] <= BUDGET_P99_MS else "NO"
    print(
        f"added: P50 {lat['added_p50_ms']:+.3f} ms (budget <= {BUDGET_P50_MS} ms): {p50_ok};"
        f"  P99 {lat['added_p99_ms']:+.3f} ms (budget <= {BUDGET_P99_MS} ms): {p99_ok}"
    )
    print(f"\nwithin budget: {'yes' if within else 'NO'}")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
