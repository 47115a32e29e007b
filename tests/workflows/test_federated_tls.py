"""TLS for ``vireid federated server`` / ``client`` (vireid.workflows.federated.tls): a CA and a server
certificate made here with ``cryptography`` (as docs/federated.md makes them with openssl), a real server
and two clients on localhost over TLS for one round, a client holding another CA refused with one
sentence, each bad certificate file named, and no unencrypted channel off loopback without --insecure."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from test_federated import TOKEN, _free_port, cli, fed_config, fed_overrides

def make_ca(folder: Path, name: str) -> tuple[Path, object, object]:
    """``(ca.pem, certificate, key)`` of a new self-signed CA (openssl req -x509 ... in docs/federated.md)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return folder / "ca.pem", cert, key


def make_server_cert(folder: Path, ca_cert, ca_key, hosts=("127.0.0.1", "localhost")) -> tuple[Path, Path]:
    """``(server.pem, server.key)``: a server certificate signed by the CA whose subjectAltName lists ``hosts``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two CAs, each with a server certificate for 127.0.0.1/localhost."""
    pytest.importorskip("cryptography", reason="the test certificates are made with cryptography (Flower needs it)")
    root = tmp_path_factory.mktemp("pki")
    out = {}
    for site in ("a", "b"):
        ca, ca_cert, ca_key = make_ca(root / site, f"vireid test CA {site}")
        cert, key = make_server_cert(root / site, ca_cert, ca_key)
        out[site] = {"ca": ca, "cert": cert, "key": key}
    return out


def _message(result) -> str:
    return result.output + str(result.exception)


def _server_error(token: Path, *args) -> str:
    result = cli("federated", "server", "--token-file", token, *args, ok=False)
    assert result.exit_code != 0 and "Traceback" not in result.output
    return _message(result)


def test_no_unencrypted_channel_off_loopback_without_insecure(tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN.decode() + "\n")
    quick = ("--connect-timeout", "1", "--rounds", "1", "--run-dir", tmp_path / "run")  # fail fast, were it served
    refused = _server_error(token, "--address", "0.0.0.0:8088", *quick)
    assert "without encryption" in refused and "--certificates" in refused and "--insecure" in refused
    refused = _server_error(token, "--address", "192.168.1.20:8088", *quick)
    assert "without encryption" in refused
    refused = _message(cli("federated", "client", "--token-file", token, "--server", "10.0.0.7:8088",
                           "--max-wait", "1", ok=False))
    assert "no --ca-certificate" in refused and "--insecure" in refused


def test_bad_certificate_files_are_one_sentence(pki, tmp_path):
    from cryptography.hazmat.primitives import serialization

    a, b = pki["a"], pki["b"]
    token = tmp_path / "token"
    token.write_text(TOKEN.decode() + "\n")

    def server(*args):
        return _server_error(token, *args)

    assert "does not exist" in server("--certificates", a["ca"], tmp_path / "nope.pem", a["key"])
    assert f"{b['key']} does not belong to the server certificate {a['cert']}" in server(
        "--certificates", a["ca"], a["cert"], b["key"])
    assert f"{a['cert']} is not accepted by the CA certificate {b['ca']}" in server(
        "--certificates", b["ca"], a["cert"], a["key"])
    assert "not in PEM form" in server("--certificates", a["ca"], a["cert"], token)
    assert "the order is CA_CERT SERVER_CERT SERVER_KEY" in server("--certificates", a["ca"], a["key"], a["cert"])
    locked = tmp_path / "locked.key"
    key = serialization.load_pem_private_key(a["key"].read_bytes(), None)
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"secret")))
    assert "encrypted with a passphrase" in server("--certificates", a["ca"], a["cert"], locked)
    assert "contradict" in server("--certificates", a["ca"], a["cert"], a["key"], "--insecure")
    assert "not in PEM form" in _message(cli("federated", "client", "--token-file", token, "--server", "10.0.0.7:8088",
                                             "--ca-certificate", token, ok=False))


def test_client_check_names_a_foreign_ca_a_wrong_host_and_a_server_without_tls(pki, tmp_path):
    """tls.check_server against a TLS socket on localhost (no Flower): each failing handshake is one sentence."""
    import socket
    import ssl
    import threading

    from vireid.errors import VireidError
    from vireid.workflows.federated.tls import check_server

    a, b = pki["a"], pki["b"]
    root = tmp_path / "only-localhost"
    ca, ca_cert, ca_key = make_ca(root, "localhost-only CA")
    cert, key = make_server_cert(root, ca_cert, ca_key, hosts=("localhost",))

    def listen(context):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()

        def serve():
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                with conn:
                    try:
                        (context.wrap_socket(conn, server_side=True) if context else conn).close()
                    except (ssl.SSLError, OSError):
                        pass

        threading.Thread(target=serve, daemon=True).start()
        return sock, f"127.0.0.1:{sock.getsockname()[1]}"

    tls_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls_ctx.load_cert_chain(cert, key)
    sock, address = listen(tls_ctx)
    with sock:
        with pytest.raises(VireidError, match="does not name 127.0.0.1"):
            check_server(address, ca.read_bytes(), 10, ca_file=ca)
        with pytest.raises(VireidError, match=f"the CA certificate {b['ca']} does not vouch for"):
            check_server(address, b["ca"].read_bytes(), 10, ca_file=b["ca"])
        with pytest.raises(VireidError, match="uses TLS: pass --ca-certificate"):
            check_server(address, None, 10)
        check_server(address.replace("127.0.0.1", "localhost"), ca.read_bytes(), 10, ca_file=ca)  # the named host
    sock, address = listen(None)
    with sock:
        with pytest.raises(VireidError, match="does not answer with TLS"):
            check_server(address, a["ca"].read_bytes(), 10, ca_file=a["ca"])
        check_server(address, None, 10)  # plain server, plain client: fine
    with pytest.raises(VireidError, match="cannot be reached"):
        check_server(f"127.0.0.1:{_free_port()}", None, 1.5, retry_every=0.5)


@pytest.mark.slow
def test_real_server_and_two_clients_over_tls_and_a_client_with_another_ca_is_refused(pki, tiny_synth_root, tmp_path):
    pytest.importorskip("flwr", reason="Flower is an optional extra: pip install 'vireid[federated]'")
    from vireid.workflows.federated.run import write_split

    a, b = pki["a"], pki["b"]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN.decode() + "\n")
    write_split(fed_config(tiny_synth_root, tmp_path), 2, "identity", tmp_path / "split")
    address = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    base = [sys.executable, "-m", "vireid", "federated"]
    common = ["--config", str(REPO / "configs" / "baseline_synth.yaml"), "--token-file", str(token_file)]
    procs = {"server": subprocess.Popen(
        [*base, "server", *common, *fed_overrides(tiny_synth_root, tmp_path), "--clients", "2", "--rounds", "1",
         "--address", address, "--run-dir", str(tmp_path / "fed"), "--connect-timeout", "120", "--round-timeout", "120",
         "--certificates", str(a["ca"]), str(a["cert"]), str(a["key"])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)}
    for i in range(2):
        manifest = tmp_path / "split" / f"client_{i}" / "manifest.csv"
        procs[f"site{i}"] = subprocess.Popen(
            [*base, "client", *common, *fed_overrides(tiny_synth_root, tmp_path), "data.format=csv",
             f"data.root={manifest}", "--server", address, "--name", f"site{i}", "--run-dir", str(tmp_path / f"c{i}"),
             "--ca-certificate", str(a["ca"]), "--max-wait", "120"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        # meanwhile, a client holding another CA and one without TLS are refused with one sentence
        wrong = cli("federated", "client", *common, "--server", address, "--ca-certificate", b["ca"],
                    "--max-wait", "120", ok=False)
        assert "presented a certificate that the CA certificate" in _message(wrong), _message(wrong)
        assert "Traceback" not in wrong.output
        plain = cli("federated", "client", *common, "--server", address, "--max-wait", "120", ok=False)
        assert "uses TLS: pass --ca-certificate" in _message(plain), _message(plain)
        outputs = {name: proc.communicate(timeout=300)[0] for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for name, proc in procs.items():
        assert proc.returncode == 0, outputs[name]
    assert "(TLS)" in outputs["server"]
    history = json.loads((tmp_path / "fed" / "federated.json").read_text())["rounds"]
    assert [sorted(r["accepted"]) for r in history] == [["site0", "site1"]]
    assert torch.load(tmp_path / "fed" / "best.pt", weights_only=True)["federated"]["round"] == 1
