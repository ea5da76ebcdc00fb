#!/usr/bin/python3
"""A small bearer-token service for registry tests (Docker's token auth spec).

  token-service.py DIR USER PASSWORD

Writes DIR/cert.pem (the registry's rootcertbundle), listens on a loopback port, prints
that port on its first line of output, and answers GET /token?service=..&scope=.. with a
JWT (RS256, the signing certificate in its x5c header) granting what was asked for, to the
one user whose basic-auth credentials match. Anything else gets 401.
"""
import base64
import datetime
import http.server
import json
import os
import sys
import time
import urllib.parse
import uuid

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

ISSUER = "berth-test-issuer"

out_dir, user, password = sys.argv[1:4]
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "berth test token signer")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (
    x509.CertificateBuilder()
    .subject_name(name)
    .issuer_name(name)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(minutes=5))
    .not_valid_after(now + datetime.timedelta(days=1))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .sign(key, hashes.SHA256())
)
with open(os.path.join(out_dir, "cert.pem"), "wb") as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))
x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        if u.path != "/token" or self.headers.get("Authorization") != want:
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}')
            return
        q = urllib.parse.parse_qs(u.query)
        access = []
        for scope in q.get("scope", []):
            kind, repo, actions = scope.split(":", 2) if scope.count(":") >= 2 else (scope, "", "")
            access.append({"type": kind, "name": repo, "actions": actions.split(",") if actions else []})
        t = int(time.time())
        claims = {"iss": ISSUER, "sub": user, "aud": q.get("service", [""])[0], "exp": t + 600,
                  "nbf": t - 60, "iat": t, "jti": str(uuid.uuid4()), "access": access}
        token = jwt.encode(claims, key_pem, algorithm="RS256", headers={"x5c": [x5c]})
        body = json.dumps({"token": token, "access_token": token, "expires_in": 600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(srv.server_address[1], flush=True)
srv.serve_forever()
