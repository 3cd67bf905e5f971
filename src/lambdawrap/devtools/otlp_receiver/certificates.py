"""A throwaway certificate authority for an https collector on loopback: the receiver's
server certificate (for localhost and 127.0.0.1) and a client certificate, made with the
openssl command, valid for two days."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_test_pki(folder: Path) -> dict:
    """{file name: path} for ca.pem, server.pem, server.key, client.pem and client.key in `folder`."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    folder.mkdir(parents=True, exist_ok=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=lambdawrap test CA")
    for name, subject, extension in (
        ("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"),
        ("client", "collector client", "extendedKeyUsage=clientAuth\n"),
    ):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={subject}")
        (folder / f"{name}.ext").write_text(extension)
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {name: str(folder / name) for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}
