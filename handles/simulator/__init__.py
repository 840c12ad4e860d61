"""A stand-alone simulator of CNRI's HANDLE.NET 9.3.1 JSON REST API, for tests, demos and benchmarks.

It answers as the real server did in `tests/handle_server/recordings/handle-net-9.3.1.jsonl`; where the
recordings are silent it follows docs/handle-server.md, the project's record of the protocol. Deliberately Django-free: it runs as its own process
(`python -m handles.simulator --help`) and uses only the standard library plus `cryptography` for its
certificates, which the optional extra `simulator` installs (`pip install '.[simulator]'`). Nothing in
production imports this package (tests/test_production_imports.py).

One TCP port serves plain HTTP and HTTPS, like the real server's port unification (docs/handle-server.md §3):
- `/api/handles/...` and `/api/prefixes`: the JSON REST API (docs/handle-server.md §4).
- any other path: the resolver, `GET /PREFIX/SUFFIX` → 302 to the record's URL (docs/handle-server.md §9).

State lives in `--data-dir`: `handles.sqlite3` (records and homed prefixes), `serverCertificate.pem`
plus its key, `clientcerts/` (a client certificate per admin handle, for HS_PUBKEY login at index 301, made
with that same key), and `faults.json`, a switch that tests flip to make the server slow, busy, unreachable
or shutting down.

TLS is 1.2 only, like the real server's. Client-certificate login (`Authorization: Handle
clientCert="true"`) works only for a client that offered no session ticket in its ClientHello: the real
server asks for the certificate by renegotiating, and a client holding a ticket resumes instead and sends
none (docs/handle-server.md §3). The simulator cannot renegotiate: it asks every client for an optional
certificate in the first handshake, trusts only the certificates in `clientcerts/`, and refuses the login
when the ClientHello carried the session-ticket extension.

The modules, by concern: `values` (handle values and their codecs), `store` (SQLite records, a data dir's
initial state, bulk loading), `certificates`, `faults` (the fault switch), `api` (the REST API's request
dispatch), `server` (HTTP/TLS, client-certificate login's ticket check, `serve`), `cli` (the command line).
As a Django app (`apps`), installed in development only, it adds `manage.py handle_simulator` and
`handle_simulator_fault` (docs/simulator.md).
"""
