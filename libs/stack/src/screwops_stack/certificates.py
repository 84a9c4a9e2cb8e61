"""The stack's CA and the certificates it signs: Kafka's broker (:mod:`kafka_security`), the gRPC
APIs' server certificate and production-line clients' certificates (mTLS).

Everything is made with the openssl CLI under the stack home's ``tls/``, private keys and
certificates owner-only, and kept once made, so a certificate never changes under a running
client; a home made before a certificate existed gets it at the next ``make up``.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from screwops_settings import grpc_certificate_files, kafka_ca_file
from screwops_settings.services import CONSOLE, SERVICES

CERT_DAYS = 3650
OWNER_ONLY = 0o600
GRPC_HOSTS = (
    "localhost",
    "127.0.0.1",
    *(entry.name for entry in SERVICES if entry.grpc_port is not None),
    CONSOLE.name,
    "gateway-headless",
)
"""The gRPC certificate's names: loopback natively, and the compose and k8s Service names the
APIs are reached by (the gateway's headless Service too, for line clients balancing over pods)."""
CLIENT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""What a client certificate's name may be: it becomes the subject CN the gateway records."""


@dataclass(frozen=True)
class Ca:
    """The stack's CA: its certificate (every client's trust) and its key (owner-only)."""

    home: Path

    @property
    def dir(self) -> Path:
        return self.home / "tls"

    @property
    def cert(self) -> Path:
        return kafka_ca_file(self.home)

    @property
    def key(self) -> Path:
        return self.dir / "ca.key"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (from the first byte)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_ONLY)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)


def _openssl(*args: str, log: Path) -> None:
    with log.open("ab") as out:
        subprocess.run(["openssl", *args], check=True, stdout=out, stderr=subprocess.STDOUT)


def _new_key(path: Path, log: Path) -> None:
    """An unencrypted P-256 key in PKCS#8 (what Kafka's PEM key store and gRPC both read)."""
    write_private(path, "")
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(path), log=log)  # fmt: skip


def ensure_ca(home: Path, *, log: Path) -> Ca:
    """The stack's CA, made once."""
    ca = Ca(home)
    if ca.cert.is_file() and ca.key.is_file():
        return ca
    ca.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _new_key(ca.key, log)
    _openssl("req", "-x509", "-new", "-key", str(ca.key), "-sha256",
             "-days", str(CERT_DAYS), "-subj", "/CN=ScrewOps local CA",
             "-out", str(ca.cert), log=log)  # fmt: skip
    return ca


def issue(
    ca: Ca,
    name: str,
    *,
    cert: Path,
    key: Path,
    usage: Literal["serverAuth", "clientAuth"],
    hosts: Iterable[str] = (),
    log: Path,
) -> None:
    """A key and a certificate with subject CN ``name`` signed by ``ca``, for a server (its
    ``hosts``: names and IP addresses) or a client, both written owner-only."""
    csr, ext = key.with_suffix(".csr"), key.with_suffix(".ext")
    _new_key(key, log)
    _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={name}", "-out", str(csr), log=log)
    lines = [f"extendedKeyUsage={usage}", "keyUsage=digitalSignature,keyEncipherment"]
    names = [f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts]
    if names:
        lines.append(f"subjectAltName={','.join(names)}")
    ext.write_text("\n".join(lines) + "\n")
    write_private(cert, "")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
             "-CAcreateserial", "-days", str(CERT_DAYS), "-sha256", "-extfile", str(ext),
             "-out", str(cert), log=log)  # fmt: skip
    for scratch in (csr, ext):
        scratch.unlink()


def ensure_grpc_certificate(home: Path, *, log: Path) -> tuple[Path, Path]:
    """The gRPC APIs' server certificate and key (:data:`GRPC_HOSTS`), issued once by the
    stack's CA (made first if the home has none)."""
    cert, key = grpc_certificate_files(home)
    if not (cert.is_file() and key.is_file()):
        issue(ensure_ca(home, log=log), "screwops-grpc", cert=cert, key=key,
              usage="serverAuth", hosts=GRPC_HOSTS, log=log)  # fmt: skip
    return cert, key


def issue_client_certificate(home: Path, name: str, out: Path, *, log: Path) -> tuple[Path, Path]:
    """A production-line client's certificate (``<out>/<name>.crt``) and key (``.key``), CN
    ``name``, signed by the stack's CA: what a camera presents to a gateway requiring client
    certificates, which records ``name`` on its inspections."""
    if not re.fullmatch(CLIENT_NAME, name):
        raise ValueError(f"a client name is 1-64 letters, digits, '.', '_' or '-': {name!r}")
    ca = Ca(home)
    if not (ca.cert.is_file() and ca.key.is_file()):
        raise FileNotFoundError(f"no CA under {ca.dir}: run `make up` first")
    cert, key = out / f"{name}.crt", out / f"{name}.key"
    issue(ca, name, cert=cert, key=key, usage="clientAuth", log=log)
    return cert, key
