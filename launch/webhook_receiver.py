"""A local webhook receiver for tengine's alerts (the e2e demo starts one; use it to try a sink).

    python launch/webhook_receiver.py --port-file /tmp/hook.port --log /tmp/alerts.jsonl \
        [--secret-env HOOK_SECRET]

Listens on 127.0.0.1 (a free port, written to --port-file once it listens), verifies each
POST's `X-Tengine-Signature` against the HMAC-SHA256 key in --secret-env when given (a bad
signature is answered 401), drops an event id it has already accepted (a retry) with 200, and
appends every accepted event to --log with `signature_ok`. Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.server
import json
import os
import signal
import sys
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port-file", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--secret-env")
    args = p.parse_args()
    secret = os.environ.get(args.secret_env, "").encode() if args.secret_env else b""
    seen: set[str] = set()
    log = Path(args.log)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 — http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            ok = True
            if secret:
                want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
                ok = hmac.compare_digest(self.headers.get("X-Tengine-Signature", ""), want)
            event_id = self.headers.get("X-Tengine-Event-Id", "")
            if not ok:
                self.send_response(401)
            else:
                if event_id not in seen:
                    seen.add(event_id)
                    event = json.loads(body)
                    with log.open("a") as fh:
                        fh.write(json.dumps({"signature_ok": bool(secret), **event}) + "\n")
                    print(f"webhook: received {event['rule']} {event['state']} "
                          f"(event {event_id[:12]}, signature "
                          f"{'verified' if secret else 'not checked'}): {event['message']}",
                          flush=True)
                self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    tmp = Path(args.port_file + ".tmp")
    tmp.write_text(str(server.server_address[1]))
    tmp.replace(args.port_file)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
