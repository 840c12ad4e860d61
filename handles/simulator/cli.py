"""`python -m handles.simulator`: the command line."""

from __future__ import annotations

import argparse
import os
import sys

from handles.simulator.server import serve

SECRET_ENV = "HANDLE_SIMULATOR_SECRET"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handles.simulator",
                                     description="Simulate a HANDLE.NET 9.3.1 server's JSON REST API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--data-dir", default="var/simulator")
    parser.add_argument("--prefix", action="append", default=[], help="a prefix to serve (repeatable)")
    parser.add_argument("--admin-handle", help="the admin identity handle (default PREFIX/ADMIN per prefix)")
    parser.add_argument("--secret", help=f"the admin's HS_SECKEY (default: ${SECRET_ENV})")
    parser.add_argument("--load-csv", help="bulk-load handle,url rows before serving")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    secret = args.secret or os.environ.get(SECRET_ENV)
    if not secret:
        parser.error(f"no secret: pass --secret or set {SECRET_ENV}")
    try:
        serve(args.data_dir, args.prefix, secret, host=args.host, port=args.port, admin_handle=args.admin_handle,
              csv_path=args.load_csv, verbose=args.verbose, announce=lambda line: print(line, flush=True))
    except (ValueError, OSError) as exc:
        print(f"handle simulator: {exc}", file=sys.stderr)
        return 2
    return 0
