"""An OpenID Connect issuer for the console's tests, served over HTTP on a loopback port.

A real one, as far as the console can tell: a discovery document, a JWKS with an RSA key made for
the test, an authorize endpoint that approves the configured user at once and sends them back with
a code, and a token endpoint that checks the client's secret and PKCE verifier and answers with an
id token signed with that key, carrying the nonce it was given. What a test may spoil on purpose:
the key that signs, the audience, the issuer, the nonce and the lifetime.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CLIENT_ID = "screwops-console"
CLIENT_SECRET = "the-console's-client-secret"
KEY_ID = "issuer-key-1"


def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": KEY_ID})


@dataclass
class Issuer:
    """What the issuer says about the user it signs in, and what it spoils."""

    url: str = ""
    key: RSAKey = field(default_factory=rsa_key)
    user: dict[str, Any] = field(default_factory=dict)
    sign_with: RSAKey | None = None
    """Sign id tokens with this key (same key id) instead of the published one."""
    audience: str = CLIENT_ID
    nonce: str | None = None
    """Put this nonce in id tokens instead of the one the authorize request sent."""
    issued_by: str | None = None
    """Name this issuer in id tokens instead of :attr:`url`."""
    lifetime_s: int = 300
    public: bool = False
    """The console is a public client: it names itself in the token request, with no secret."""
    codes: dict[str, dict[str, str]] = field(default_factory=dict)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/authorize", self._authorize),
                Route("/token", self._token, methods=["POST"]),
            ]
        )

    async def _discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            }
        )

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    async def _authorize(self, request: Request) -> Response:
        asked = request.query_params
        if asked.get("client_id") != CLIENT_ID or asked.get("response_type") != "code":
            return JSONResponse({"error": "unauthorized_client"}, status_code=400)
        if asked.get("code_challenge_method") != "S256" or "openid" not in asked["scope"].split():
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "redirect_uri": asked["redirect_uri"],
            "nonce": asked.get("nonce", ""),
            "challenge": asked["code_challenge"],
        }
        back = {"code": code, "state": asked["state"]}
        return RedirectResponse(f"{asked['redirect_uri']}?{urlencode(back)}", status_code=302)

    async def _token(self, request: Request) -> Response:
        form = await request.form()
        secret = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        authorized = (
            "authorization" not in request.headers and form.get("client_id") == CLIENT_ID
            if self.public
            else request.headers.get("authorization") == f"Basic {secret}"
        )
        if not authorized:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self.codes.pop(str(form.get("code")), None)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if (
            grant is None
            or form.get("redirect_uri") != grant["redirect_uri"]
            or challenge.rstrip(b"=").decode() != grant["challenge"]
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now = int(time.time())
        claims = {
            "iss": self.issued_by or self.url,
            "aud": self.audience,
            "iat": min(now, now + self.lifetime_s),
            "exp": now + self.lifetime_s,
            "nonce": grant["nonce"] if self.nonce is None else self.nonce,
            **self.user,
        }
        header = {"alg": "RS256", "kid": KEY_ID}
        id_token = jwt.encode(header, claims, self.sign_with or self.key)
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(16),
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
            }
        )


@contextmanager
def serving(issuer: Issuer) -> Iterator[Issuer]:
    """Serve ``issuer`` on a free loopback port (its ``url`` set to it) until the block ends."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    issuer.url = f"http://127.0.0.1:{listening.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(issuer.app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "the issuer stopped while starting"
        assert time.monotonic() < deadline, "the issuer did not start in 10 s"
        time.sleep(0.01)
    try:
        yield issuer
    finally:
        server.should_exit = True
        thread.join(10)
        listening.close()
