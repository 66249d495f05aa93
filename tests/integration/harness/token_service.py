#!/usr/bin/env python3
"""A Docker token service for the tests, standing in for an external one (Harbor, GitLab,
docker_auth, a cloud IAM): it speaks distribution's token protocol to real clients and signs
with PyJWT, a different JWT implementation from the server's.

    token_service.py CONFIG.json OUT_DIR

At start it makes its keys (EC P-256 "good", RSA 2048 "rsa", EC "other" that the registry is
never told about, EC "next" published only after GET /publish-next), writes into OUT_DIR
    trusted.pem   the public keys of "good" and "rsa" (PEM)
    jwks.json     the same as a JWK set (kid = the key's name)
    port          the port it listens on (127.0.0.1, chosen by the kernel)
and serves
    GET /token?service=S&scope=repository:NAME:pull[&scope=...][&account=U]
        Basic credentials of a configured user, or none (an anonymous token, sub "").
        {"token": JWT, "access_token": JWT, "expires_in": N, "issued_at": ISO-8601}
        Wrong credentials: 401.
    POST /token         the OAuth2 form (grant_type=password, username, password, service,
                        scope), which containerd tries first
    GET /jwks.json      the published keys (for NIXERY_AUTH_TOKEN_KEYS=<URL>)
    GET /publish-next   adds "next" to /jwks.json

CONFIG.json:
    {"issuer": "...",
     "users": {"alice": {"password": "...", "repositories": ["shell/hello", "hello*"],
                         "key": "good", "expires_in": 300, "audience": null}},
     "anonymous": {"repositories": ["*"]}}
A user's "key" picks the signing key ("other": a key the registry does not trust),
"expires_in" may be negative (expired tokens), "audience" replaces the requested service
(tokens for another registry). Repositories are fnmatch patterns; a requested scope is
granted the actions among pull that the user has for it.

Each request is logged on stderr (user and scope, never a password or token).
"""

import base64
import os
import datetime
import fnmatch
import http.server
import json
import sys
import time
import urllib.parse
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def make_keys():
    keys = {
        "good": ("ES256", ec.generate_private_key(ec.SECP256R1())),
        "rsa": ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "other": ("ES256", ec.generate_private_key(ec.SECP256R1())),
        "next": ("ES256", ec.generate_private_key(ec.SECP256R1())),
    }
    return keys


def public_pem(private):
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def jwk(name, alg, private):
    algorithm = jwt.algorithms.ECAlgorithm if alg.startswith("ES") else jwt.algorithms.RSAAlgorithm
    key = algorithm.to_jwk(private.public_key(), as_dict=True)
    key.update({"kid": name, "alg": alg, "use": "sig"})
    return key


class Service:
    def __init__(self, config, keys):
        self.config = config
        self.keys = keys
        self.published = ["good", "rsa"]

    def jwks(self):
        return {"keys": [jwk(n, self.keys[n][0], self.keys[n][1]) for n in self.published]}

    def user(self, headers):
        """(name, settings) of the request's Basic credentials; (None, anonymous settings)
        without; None if they are wrong."""
        auth = headers.get("Authorization")
        if not auth:
            return None, self.config.get("anonymous", {"repositories": []})
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except Exception:
            return None
        settings = self.config["users"].get(user)
        if settings is None or settings["password"] != password:
            return None
        return user, settings

    def token(self, user, settings, service, scopes):
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3 or parts[0] != "repository":
                continue
            name, actions = ":".join(parts[1:-1]), parts[-1].split(",")
            allowed = any(fnmatch.fnmatchcase(name, p) for p in settings.get("repositories", []))
            granted = [a for a in actions if a == "pull" and allowed]
            access.append({"type": "repository", "name": name, "actions": granted})
        now = int(time.time())
        expires_in = settings.get("expires_in", 300)
        claims = {
            "iss": self.config["issuer"],
            "sub": user or "",
            "aud": settings.get("audience") or service,
            "exp": now + expires_in,
            "nbf": now - 1,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "access": access,
        }
        name = settings.get("key", "good")
        alg, private = self.keys[name]
        token = jwt.encode(claims, private, algorithm=alg, headers={"kid": name})
        issued = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat()
        return {"token": token, "access_token": token, "expires_in": expires_in, "issued_at": issued}


def handler(service):
    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            if url.path == "/jwks.json":
                return self.answer(200, service.jwks())
            if url.path == "/publish-next":
                service.published.append("next")
                return self.answer(200, {"published": service.published})
            if url.path != "/token":
                return self.answer(404, {"details": "not found"})
            found = service.user(self.headers)
            scopes = [s for value in query.get("scope", []) for s in value.split(" ")]
            if found is None:
                sys.stderr.write(f"token: refused credentials, scope={scopes}\n")
                return self.answer(401, {"details": "invalid credentials"})
            user, settings = found
            sys.stderr.write(f"token: user={user or '(anonymous)'} service={query.get('service')} scope={scopes}\n")
            body = service.token(user, settings, query.get("service", [""])[0], scopes)
            self.answer(200, body)

        def do_POST(self):
            """The OAuth2 form of the token request (containerd tries it first when it has
            credentials): grant_type=password with username and password in the form."""
            url = urllib.parse.urlsplit(self.path)
            if url.path != "/token":
                return self.answer(404, {"details": "not found"})
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            if form.get("grant_type") != ["password"]:
                return self.answer(400, {"error": "unsupported_grant_type"})
            user = form.get("username", [""])[0]
            settings = service.config["users"].get(user)
            if settings is None or settings["password"] != form.get("password", [""])[0]:
                sys.stderr.write("token: refused credentials (oauth2)\n")
                return self.answer(401, {"error": "invalid_grant"})
            scopes = [s for value in form.get("scope", []) for s in value.split(" ")]
            sys.stderr.write(f"token: user={user} service={form.get('service')} scope={scopes} (oauth2)\n")
            self.answer(200, service.token(user, settings, form.get("service", [""])[0], scopes))

        def log_message(self, format, *args):
            sys.stderr.write("http: " + (format % args) + "\n")

    return Handler


def main():
    config_path, out = sys.argv[1], sys.argv[2]
    with open(config_path) as f:
        config = json.load(f)
    keys = make_keys()
    service = Service(config, keys)
    with open(f"{out}/trusted.pem", "w") as f:
        f.write(public_pem(keys["good"][1]) + public_pem(keys["rsa"][1]))
    with open(f"{out}/jwks.json", "w") as f:
        json.dump(service.jwks(), f)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler(service))
    with open(f"{out}/port.tmp", "w") as f:
        f.write(str(server.server_address[1]))
    # Written whole, then renamed: the harness reads the port only once it is complete.

    os.rename(f"{out}/port.tmp", f"{out}/port")
    server.serve_forever()


if __name__ == "__main__":
    main()
