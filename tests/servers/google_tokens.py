"""Service-account credentials for tests: a key file shaped as Google issues them (a private key generated here
and now, never a real credential) and an OAuth token URI on 127.0.0.1 that answers with a chosen status."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

#: What Google writes as a key's token_uri.
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"


def service_account_key_file(path: Path, token_uri: str | None = None, *, project: str = "p",
                             email: str = "runner@p.iam.gserviceaccount.com", key_id: str = "k1") -> str:
    """Write a service-account key file at `path` (token_uri None: Google's) and return its path."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    path.write_text(json.dumps({"type": "service_account", "project_id": project, "private_key_id": key_id,
                                "private_key": pem, "client_email": email, "client_id": "1",
                                "token_uri": token_uri or GOOGLE_TOKEN_URI}))
    return str(path)


class TokenServer:
    """A token URI on 127.0.0.1 answering every request with `status`: 200 grants a made-up access token, 400 is
    invalid_grant (a deleted or revoked key), anything else "unavailable". Counts the requests in `hits`."""

    def __init__(self, status: int = 200):
        owner = self
        self.hits = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                owner.hits += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = ({"access_token": "made-up-token", "expires_in": 3600, "token_type": "Bearer"}
                          if status == 200 else
                          {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
                          if status == 400 else {"error": "unavailable"})
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/token"
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
