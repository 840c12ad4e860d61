"""Replay every exchange recorded from a real HANDLE.NET 9.3.1 server against a fresh simulator.

The recordings (recordings/handle-net-9.3.1.jsonl, copied from shared/handle-server-recordings) depend on
each other in order, so one test replays them all on one simulator and reports every mismatch at once.
Comparison rules are the recordings' README: status, content-type, WWW-Authenticate and Location headers,
and the JSON body exactly (key order ignored, list order kept) once volatile parts become placeholders;
where the real body is a Java exception text, only its presence is compared.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.simulator_process import Reply, SimulatorProcess

RECORDINGS = Path(__file__).parent / "recordings" / "handle-net-9.3.1.jsonl"
EXCHANGES = [json.loads(line) for line in RECORDINGS.read_text(encoding="utf-8").splitlines() if line.strip()]
PREFIX, SECRET = "20.500.12345", "test-secret-key-123"  # the recordings' initial state (their README)

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
MINTED_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
SESSION = re.compile(r'sessionId="[^"]+"')
NONCE = re.compile(r'nonce="([^"]*)"')
JAVA_MESSAGE = re.compile(r"^(java\.|com\.google\.gson\.)")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with SimulatorProcess(tmp_path_factory.mktemp("recordings"), prefixes=[PREFIX], secret=SECRET) as sim:
        yield sim


def _placeholders(element: Any) -> Any:
    """Server-set timestamps → <TIMESTAMP>, minted suffixes → <UUID>; anything else is left to compare."""
    if isinstance(element, dict):
        return {key: "<TIMESTAMP>" if key == "timestamp" and isinstance(value, str) and TIMESTAMP.fullmatch(value)
                else _placeholders(value) for key, value in element.items()}
    if isinstance(element, list):
        return [_placeholders(item) for item in element]
    if isinstance(element, str):
        return MINTED_UUID.sub("<UUID>", element)
    return element


def _challenge(header: str) -> str:
    nonce = NONCE.search(header)
    if nonce and len(base64.b64decode(nonce.group(1))) == 16:  # a 16-byte nonce, base64 (docs/handle-server.md §7)
        header = NONCE.sub('nonce="<NONCE>"', header)
    return SESSION.sub('sessionId="<SESSION>"', header)


def _observed(reply: Reply, recorded_body: Any) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if reply.content_type is not None:
        headers["content-type"] = reply.content_type
    if challenges := reply.headers.get_all("WWW-Authenticate"):
        headers["www-authenticate"] = [_challenge(value) for value in challenges]
    if (location := reply.headers.get("Location")) is not None:
        headers["location"] = location
    body = _placeholders(reply.json) if reply.body else None
    recorded_message = recorded_body.get("message", "") if isinstance(recorded_body, dict) else ""
    if isinstance(body, dict) and JAVA_MESSAGE.match(recorded_message):
        # The Java exception text may be the simulator's own words; that there is one still counts.
        body["message"] = recorded_message if body.get("message") else None
    return {"status": reply.status, "headers": headers, "body": body}


def _recorded(response: dict[str, Any]) -> dict[str, Any]:
    headers = dict(response["headers"])
    if isinstance(headers.get("www-authenticate"), str):
        headers["www-authenticate"] = [headers["www-authenticate"]]
    return {"status": response["status"], "headers": headers, "body": response["body"]}


def _credentials(sim: SimulatorProcess, value: str) -> str:
    return {"<BASIC admin>": sim.basic_auth(),
            "<BASIC wrong-secret>": sim.basic_auth(secret="not-" + SECRET)}.get(value, value)


def test_the_recordings_cover_the_documented_cases():
    assert len(EXCHANGES) == 50
    assert len({exchange["name"] for exchange in EXCHANGES}) == 50
    assert {exchange["request"]["scheme"] for exchange in EXCHANGES} == {"http", "https"}


def test_simulator_answers_every_recorded_exchange_like_the_real_server(sim):
    clients = {"http": sim.client(https=False), "https": sim.client(https=True)}
    minted: str | None = None
    mismatches, replayed = [], 0
    for number, exchange in enumerate(EXCHANGES, start=1):
        request, response = exchange["request"], exchange["response"]
        path = request["path"]
        if minted:
            path = MINTED_UUID.sub(minted, path)  # later requests name the handle the real server minted
        if request["query"]:
            path += "?" + request["query"]
        body = None if request["body"] is None else request["body"].encode()
        headers = {name: _credentials(sim, value) for name, value in request["headers"].items()}
        reply = clients[request["scheme"]].request(request["method"], path, body=body, headers=headers)
        replayed += 1
        if "<UUID>" in json.dumps(response["body"]) and request["method"] == "PUT":
            minted = MINTED_UUID.search(reply.json["handle"]).group()
        observed, recorded = _observed(reply, response["body"]), _recorded(response)
        if observed != recorded:
            mismatches.append(f"#{number} {exchange['name']} ({request['method']} {request['scheme']} {path}):\n"
                              f"  recorded {recorded}\n  observed {observed}")
    assert replayed == len(EXCHANGES)
    assert minted is not None, "the mint exchange did not run"
    assert not mismatches, f"{len(mismatches)} of {replayed} exchanges differ:\n" + "\n".join(mismatches)
