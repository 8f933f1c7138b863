"""``authgate serve`` as a process: starts, answers, sees CLI changes, stops on signals."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

AUTHGATE = str(Path(sys.executable).parent / "authgate")


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [AUTHGATE, *args], env=env, check=True, capture_output=True, text=True
    ).stdout


def status_of(url: str, key: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def eventually(url: str, key: str | None, expected: int) -> None:
    """Wait (5 s at most) until ``url`` answers ``expected``: workers reload within ~1 s."""
    deadline = time.monotonic() + 5
    while status_of(url, key) != expected:
        assert time.monotonic() < deadline, f"{url} never answered {expected}"
        time.sleep(0.1)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str], str]]:
    env = {
        **os.environ,
        "AUTHGATE_CONFIG": str(tmp_path / "authgate.toml"),
        "AUTHGATE_SERVER__PORT": "0",
        "AUTHGATE_CONTROL__PORT": "0",
        "AUTHGATE_PASSWORDS__ARGON2_MEMORY_KIB": "8",
    }
    cli(env, "init", str(tmp_path))
    proc = subprocess.Popen(
        [AUTHGATE, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    ports = re.findall(r"http://127\.0\.0\.1:(\d+)", line)
    assert len(ports) == 2, line + (proc.stderr.read() if proc.stderr else "")
    env["TEST_ADMIN_URL"] = f"http://127.0.0.1:{ports[1]}"
    yield proc, env, f"http://127.0.0.1:{ports[0]}"
    if proc.poll() is None:
        proc.kill()
    proc.communicate()  # reaps the process and closes its pipes


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_and_stops_cleanly_on_signals(
    instance: tuple[subprocess.Popen[str], dict[str, str], str], sig: signal.Signals
) -> None:
    proc, env, base = instance
    cli(env, "principal", "add", "agent", "--kind", "agt", "--tier", "2")
    key = re.findall(r"agk_\w+", cli(env, "key", "issue", "agent"))[0]
    assert status_of(f"{base}/healthz") == 200
    eventually(f"{base}/v1/authorize/v1/models", key, 200)
    assert status_of(f"{base}/v1/authorize/v1/models") == 401
    proc.send_signal(sig)
    _, errors = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "Traceback" not in errors


def test_cli_changes_reach_the_running_server(
    instance: tuple[subprocess.Popen[str], dict[str, str], str],
) -> None:
    _, env, base = instance
    cli(env, "principal", "add", "agent", "--kind", "agt", "--tier", "2")
    issued = cli(env, "key", "issue", "agent", "--json")
    key = re.findall(r"agk_\w+", issued)[0]
    eventually(f"{base}/v1/authorize/v1/models", key, 200)
    cli(env, "key", "revoke", key[4:16])
    eventually(f"{base}/v1/authorize/v1/models", key, 401)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_workers_share_the_port_and_stop_together(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "AUTHGATE_CONFIG": str(tmp_path / "authgate.toml"),
        "AUTHGATE_SERVER__PORT": str(port),
        "AUTHGATE_CONTROL__PORT": "0",
    }
    cli(env, "init", str(tmp_path))
    proc = subprocess.Popen(
        [AUTHGATE, "serve", "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert sum("ready" in line for line in lines) == 2, lines
        prefixes: set[str] = set()
        deadline = time.monotonic() + 10
        while len(prefixes) < 2 and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                prefixes.add(answer.headers["x-request-id"].split("-")[0])
        assert len(prefixes) == 2  # each worker draws its own request-id prefix
        proc.send_signal(signal.SIGTERM)
        _, errors = proc.communicate(timeout=20)
        assert proc.returncode == 0, errors
        assert "Traceback" not in errors
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_cli_admin_commands_through_the_admin_api(
    instance: tuple[subprocess.Popen[str], dict[str, str], str],
) -> None:
    _, env, base = instance
    root = re.findall(r"agk_\w+", cli(env, "key", "issue", "system"))[0]
    remote = {**env, "AUTHGATE_ADMIN_KEY": root, "AUTHGATE_CONFIG": "/nonexistent.toml"}
    url = env["TEST_ADMIN_URL"]
    eventually(f"{base}/v1/authorize/v1/models", root, 200)  # the server has loaded the key
    made = cli(
        remote, "--url", url, "principal", "add", "remote-agent", "--kind", "agt", "--tier", "2"
    )
    assert "remote-agent" in made
    issued = cli(remote, "--url", url, "key", "issue", "remote-agent", "--json")
    key = re.findall(r"agk_\w+", issued)[0]
    # the admin API changed the server's memory at once: no reload wait needed
    assert status_of(f"{base}/v1/authorize/v1/models", key) == 200
    cli(remote, "--url", url, "key", "revoke", key[4:16])
    assert status_of(f"{base}/v1/authorize/v1/models", key) == 401
    listed = cli(remote, "--url", url, "key", "list", "--principal", "remote-agent", "--json")
    assert '"revoked"' in listed
    failed = subprocess.run(
        [AUTHGATE, "--url", url, "principal", "show", "nobody"],
        env=remote, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert failed.returncode == 2
    assert "error [not_found]" in failed.stderr


def test_durable_audit_mode_records_every_decision(tmp_path: Path) -> None:
    from authgate.audit.log import Ledger
    from authgate.audit.note import Signer

    env = {
        **os.environ,
        "AUTHGATE_CONFIG": str(tmp_path / "authgate.toml"),
        "AUTHGATE_SERVER__PORT": "0",
        "AUTHGATE_CONTROL__ENABLED": "false",
        "AUTHGATE_AUDIT__MODE": "durable",
        "AUTHGATE_AUDIT__INSTANCE": "test.local",
    }
    cli(env, "init", str(tmp_path))
    cli(env, "principal", "add", "agent", "--kind", "agt", "--tier", "2")
    key = re.findall(r"agk_\w+", cli(env, "key", "issue", "agent"))[0]
    proc = subprocess.Popen(
        [AUTHGATE, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        base = re.findall(r"http://127\.0\.0\.1:\d+", proc.stdout.readline())[0]
        url = f"{base}/v1/authorize/v1/models"
        statuses = [status_of(url, key), status_of(url), status_of(url, key[:-1] + "x")]
        assert statuses == [200, 401, 401]
        proc.send_signal(signal.SIGTERM)
        _, errors = proc.communicate(timeout=15)
        assert proc.returncode == 0, errors
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    signer = Signer.from_skey((tmp_path / "data" / "audit" / "signing.key").read_text())
    assert signer.name == "test.local"
    log = Ledger(tmp_path / "data" / "audit" / "w0", "test.local/w0", signer)
    report = log.open()
    log.close()
    assert report.size == 3  # every answered decision is in the log
    assert report.checkpoint_size == 3  # and a final checkpoint covers it
    # the client address is in the log only as an HMAC an investigator can recompute
    from authgate.audit.event import decode
    from authgate.audit.segment import ScanEnd, list_segments, scan

    w0 = tmp_path / "data" / "audit" / "w0"
    segment = list_segments(w0 / "segments")[0]
    assert b"127.0.0.1" not in segment.read_bytes()
    digest = cli(env, "audit", "hash", "127.0.0.1").strip()
    hashes = {
        decode(r.payload).client_hash
        for r in scan(segment, last=True)
        if not isinstance(r, ScanEnd)
    }
    assert hashes == {bytes.fromhex(digest)}
    agent = f"Python-urllib/{sys.version_info.major}.{sys.version_info.minor}"
    assert agent.encode() not in segment.read_bytes()
    agent_digest = cli(env, "audit", "hash", agent).strip()
    agents = {
        decode(r.payload).user_agent_hash
        for r in scan(segment, last=True)
        if not isinstance(r, ScanEnd)
    }
    assert agents == {bytes.fromhex(agent_digest)}
    verified = cli(env, "audit", "verify", str(w0))
    assert verified.startswith("OK    3 records")


def test_gateway_mode_streams_from_the_demo_upstream_to_curl(tmp_path: Path) -> None:
    """`authgate demo-upstream` behind `authgate serve`, driven by curl as a user would."""
    demo = subprocess.Popen(
        [AUTHGATE, "demo-upstream", "--port", "0", "--interval-ms", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert demo.stdout is not None
    upstream = re.findall(r"http://127\.0\.0\.1:\d+", demo.stdout.readline())[0]
    env = {
        **os.environ,
        "AUTHGATE_CONFIG": str(tmp_path / "authgate.toml"),
        "AUTHGATE_SERVER__PORT": "0",
        "AUTHGATE_CONTROL__ENABLED": "false",
        "AUTHGATE_UPSTREAMS__DEFAULT__URLS": f'["{upstream}"]',
    }
    key = re.findall(r"agk_\w+", cli(env, "init", str(tmp_path)))[0]
    proc = subprocess.Popen(
        [AUTHGATE, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        base = re.findall(r"http://127\.0\.0\.1:\d+", proc.stdout.readline())[0]
        body = '{"stream": true, "messages": [{"role": "user", "content": "one two"}]}'
        out = subprocess.run(
            [
                "curl",
                "-sS",
                "-N",
                "-H",
                f"Authorization: Bearer {key}",
                "-d",
                body,
                f"{base}/v1/chat/completions",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        events = [line[6:] for line in out.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert "two" in "".join(events)
        denied = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{base}/v1/models"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert denied == "401"
    finally:
        proc.send_signal(signal.SIGTERM)
        demo.send_signal(signal.SIGTERM)
        _, errors = proc.communicate(timeout=15)
        demo.communicate(timeout=15)
    assert proc.returncode == 0
    assert "Traceback" not in errors
    logs = [p for p in (tmp_path / "data" / "audit").rglob("w0") if p.is_dir()]
    verified = cli(env, "audit", "verify", str(logs[0]))
    assert verified.startswith("OK    2 records")  # the allowed chat and the denied models


def test_signing_key_rotation_reaches_a_running_server(
    instance: tuple[subprocess.Popen[str], dict[str, str], str],
) -> None:
    """Token, rotate with the CLI, token again: a new kid signs, the JWKS publishes both,
    and the first token still works."""
    _, env, base = instance
    cli(env, "principal", "add", "robot", "--kind", "svc", "--tier", "2")
    key = re.findall(r"agk_\w+", cli(env, "key", "issue", "robot"))[0]

    def token() -> str:
        request = urllib.request.Request(
            f"{base}/v1/token",
            data=b"grant_type=client_credentials",
            headers={"Authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            return str(json.loads(answer.read())["access_token"])

    def kid(tok: str) -> str:
        head = tok.split(".")[0]
        return str(json.loads(base64.urlsafe_b64decode(head + "=="))["kid"])

    eventually(f"{base}/v1/authorize/v1/models", key, 200)
    first = token()
    printed = cli(env, "keys", "rotate-signing")
    deadline = time.monotonic() + 5
    while kid(second := token()) == kid(first):
        assert time.monotonic() < deadline, "the server never picked up the new key"
        time.sleep(0.1)
    assert kid(second) in printed
    with urllib.request.urlopen(f"{base}/.well-known/jwks.json", timeout=5) as answer:
        published = {k["kid"] for k in json.loads(answer.read())["keys"]}
    assert published == {kid(first), kid(second)}
    assert status_of(f"{base}/v1/authorize/v1/models", None) == 401
    request = urllib.request.Request(
        f"{base}/v1/authorize/v1/models", headers={"Authorization": f"Bearer {first}"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200


def test_a_handoff_is_one_correlated_story_in_the_audit_log(
    instance: tuple[subprocess.Popen[str], dict[str, str], str], tmp_path: Path
) -> None:
    """Create, redeem and use a delegated token against a running server; after it stops,
    ``audit query --correlation`` finds all three, and the log verifies."""
    proc, env, base = instance
    keys = {}
    for name in ("planner", "writer"):
        cli(env, "principal", "add", name, "--kind", "agt", "--tier", "2", "--scope", "chat")
        keys[name] = re.findall(r"agk_\w+", cli(env, "key", "issue", name))[0]

    def post(path: str, key: str, body: dict[str, object]) -> dict[str, str]:
        request = urllib.request.Request(
            f"{base}{path}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            return dict(json.loads(answer.read()))

    eventually(f"{base}/v1/authorize/v1/models", keys["writer"], 200)
    created = post("/v1/handoffs", keys["planner"], {"to": "writer", "context": {"n": 1}})
    redeemed = post("/v1/handoffs/redeem", keys["writer"], {"ticket": created["ticket"]})
    request = urllib.request.Request(
        f"{base}/v1/authorize/v1/models",
        headers={"Authorization": f"Bearer {redeemed['access_token']}"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.headers["X-Auth-Actor"].startswith("agt_")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=15)
    audit_dir = str(tmp_path / "data" / "audit")
    found = cli(env, "audit", "query", "--correlation", created["correlation_id"], audit_dir)
    events = [json.loads(line) for line in found.splitlines()]
    assert [(e["type"], e["action"], e["outcome"]) for e in events] == [
        ("handoff", "create", "allow"),
        ("handoff", "redeem", "allow"),
        ("authz", "decide", "allow"),
    ]
    assert cli(env, "audit", "verify", str(tmp_path / "data" / "audit" / "w0")).startswith("OK")
