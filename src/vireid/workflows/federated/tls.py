"""TLS for ``vireid federated server`` / ``client``: reading and checking the certificate files, the
rule that an unencrypted channel is only used on loopback (or with ``--insecure``), and a client's
handshake check before it hands the connection to Flower.

Flower's gRPC pair takes the certificates as PEM bytes: ``start_server(certificates=(ca, cert, key))``
(``flwr.compat.server.app.start_server``; gRPC's ``ssl_server_credentials`` without client
certificates) and ``start_client(root_certificates=ca, insecure=False)`` (``grpc.ssl_channel_credentials``).
gRPC itself reports a bad file as a log line or a connection that never comes up and is retried until
``--max-wait``; so every file is checked here first with Python's :mod:`ssl` (the same OpenSSL checks:
PEM form, key belongs to certificate, certificate signed by the CA, certificate names the address the
client dials) and each mistake becomes one sentence.

TLS encrypts the weights on the wire and lets each client check it talks to the real server; the
shared token (HMAC over every message, :mod:`.updates`) still authenticates clients to the server.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Sequence
from pathlib import Path

from vireid.errors import ConfigError, VireidError

MAKE_CERTS = "docs/federated.md ('TLS') shows how to make a CA and a server certificate with openssl"


def split_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` (``[::1]:8088`` for IPv6; brackets removed from the host)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def is_loopback(address: str) -> bool:
    """Whether ``HOST:PORT`` names this machine only (``localhost``, 127.0.0.0/8 or ``::1``)."""
    host, _ = split_address(address)
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def _read(path: Path, what: str, option: str) -> bytes:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{option}: the {what} {path} does not exist; {MAKE_CERTS}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{option}: the {what} {path} cannot be read ({err.strerror or err}); make it readable by "
                          "the user who runs vireid") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{option}: the {what} {path} is not in PEM form (text starting with '-----BEGIN'); "
                          f"convert it with openssl, or {MAKE_CERTS}")
    return data


def _ca_context(ca: bytes, path: Path, option: str, check_hostname: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = check_hostname
    try:
        context.load_verify_locations(cadata=ca.decode("ascii", errors="replace"))
    except (ssl.SSLError, ValueError) as err:
        raise ConfigError(f"{option}: the CA certificate {path} holds no readable certificate ({_reason(err)}); "
                          f"pass the PEM file of the CA that signed the server certificate; {MAKE_CERTS}") from None
    return context


def _reason(err: BaseException) -> str:
    text = getattr(err, "verify_message", None) or getattr(err, "reason", None) or str(err) or type(err).__name__
    return str(text).replace("_", " ").lower() if str(text).isupper() else str(text)


def server_certificates(files: Sequence[Path] | None, address: str, insecure: bool) -> tuple[bytes, bytes, bytes] | None:
    """The ``(ca, cert, key)`` PEM bytes Flower's ``start_server`` takes, checked; ``None`` for a plain
    channel, which is refused on an address other machines can reach unless ``insecure``."""
    if files and insecure:
        raise ConfigError("--certificates and --insecure contradict each other; drop --insecure to serve over TLS")
    if not files:
        if not insecure and not is_loopback(address):
            raise ConfigError(f"the server would listen on {address} without encryption: give it --certificates "
                              "CA_CERT SERVER_CERT SERVER_KEY to serve over TLS, or pass --insecure to accept an "
                              "unencrypted channel (weights readable on the network)")
        return None
    ca_path, cert_path, key_path = (Path(f).expanduser() for f in files)
    ca = _read(ca_path, "CA certificate", "--certificates")
    cert = _read(cert_path, "server certificate", "--certificates")
    key = _read(key_path, "server key", "--certificates")
    client_side = _ca_context(ca, ca_path, "--certificates", check_hostname=False)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

    def no_password() -> str:
        raise ConfigError(f"--certificates: the server key {key_path} is encrypted with a passphrase; gRPC needs an "
                          "unencrypted key (openssl ... -noenc), readable only by the server's user")

    try:
        server_side.load_cert_chain(cert_path, key_path, password=no_password)
    except ssl.SSLError as err:
        if "KEY_VALUES_MISMATCH" in str(err) or "key values mismatch" in str(err).lower():
            raise ConfigError(f"--certificates: the server key {key_path} does not belong to the server certificate "
                              f"{cert_path}; pass the key the certificate was made from") from None
        raise ConfigError(f"--certificates: {cert_path} and {key_path} are not a PEM server certificate and its "
                          "private key (the order is CA_CERT SERVER_CERT SERVER_KEY; OpenSSL says: "
                          f"{_reason(err)}); {MAKE_CERTS}") from None
    try:
        _memory_handshake(client_side, server_side)
    except ssl.SSLCertVerificationError as err:
        raise ConfigError(f"--certificates: the server certificate {cert_path} is not accepted by the CA certificate "
                          f"{ca_path} ({_reason(err)}); pass the CA that signed it, or make a new server certificate "
                          "with that CA") from None
    except ssl.SSLError as err:
        raise ConfigError(f"--certificates: a TLS handshake with {cert_path} and {key_path} fails ({_reason(err)}); "
                          f"{MAKE_CERTS}") from None
    return ca, cert, key


def _memory_handshake(client_side: ssl.SSLContext, server_side: ssl.SSLContext) -> None:
    """Run a TLS handshake between the two contexts in memory (no socket): raises the client's
    verification error if the server certificate does not chain to the CA."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_side.wrap_bio(c_in, c_out, server_side=False)
    server = server_side.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(50):
        for name, end, out, peer in (("client", client, c_out, s_in), ("server", server, s_out, c_in)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError:
                    if name == "server":  # the client's alert carries no reason: re-raise the client's error
                        _pump(out, peer)
                        client.do_handshake()
                    raise
            _pump(out, peer)
        if all(done.values()):
            return
    raise ssl.SSLError("the handshake did not finish")


def _pump(out: ssl.MemoryBIO, peer: ssl.MemoryBIO) -> None:
    data = out.read()
    if data:
        peer.write(data)


def client_ca(ca_file: Path | None, address: str, insecure: bool) -> bytes | None:
    """The CA certificate (PEM bytes) a client checks the server with, or ``None`` for a plain channel,
    which is refused to a server other machines can reach unless ``insecure``."""
    if ca_file is not None and insecure:
        raise ConfigError("--ca-certificate and --insecure contradict each other; drop --insecure to connect over TLS")
    if ca_file is None:
        if not insecure and not is_loopback(address):
            raise ConfigError(f"the server {address} is not on this machine and no --ca-certificate is given: pass "
                              "--ca-certificate CA_CERT (the CA that signed the server's certificate) to connect over "
                              "TLS, or --insecure to accept an unencrypted channel (weights readable on the network)")
        return None
    path = Path(ca_file).expanduser()
    ca = _read(path, "CA certificate", "--ca-certificate")
    _ca_context(ca, path, "--ca-certificate", check_hostname=True)
    return ca


def check_server(address: str, ca: bytes | None, max_wait: float, *, ca_file: Path | None = None,
                 retry_every: float = 1.0) -> None:
    """Before Flower connects: wait up to ``max_wait`` s for the server to accept connections, then make
    one TLS handshake with it. With ``ca`` the server must present a certificate signed by that CA that
    names the host in ``address``; without it (plain channel) a server that speaks TLS is an error too,
    since gRPC would only retry until ``--max-wait``."""
    host, port = split_address(address)
    deadline = time.monotonic() + max_wait
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=10)
            break
        except OSError as err:
            if time.monotonic() + retry_every > deadline:
                raise VireidError(f"the federated server at {address} cannot be reached ({err.strerror or err}) within "
                                  f"--max-wait {max_wait:.0f} s; check the address and that the server runs") from None
            time.sleep(retry_every)
    with sock:
        sock.settimeout(10)
        if ca is not None:
            context = _ca_context(ca, Path(ca_file or "CA"), "--ca-certificate", check_hostname=True)
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["h2"])
        try:
            with context.wrap_socket(sock, server_hostname=host):
                speaks_tls = True
        except ssl.SSLCertVerificationError as err:
            if err.verify_code == 62 or "hostname" in str(err).lower() or "ip address mismatch" in str(err).lower():
                raise VireidError(f"the server's certificate does not name {host} ({_reason(err)}): connect with the "
                                  "name or address the certificate was made for, or make the server certificate with "
                                  f"subjectAltName {'IP' if _is_ip(host) else 'DNS'}:{host}") from None
            raise VireidError(f"the server at {address} presented a certificate that the CA certificate {ca_file} does "
                              f"not vouch for ({_reason(err)}); ask the server's operator for the CA that signed its "
                              "certificate") from None
        except (ssl.SSLError, ConnectionError, socket.timeout, OSError):
            speaks_tls = False
    if ca is not None and not speaks_tls:
        raise VireidError(f"the server at {address} does not answer with TLS; it was started without --certificates: "
                          "start it with --certificates CA_CERT SERVER_CERT SERVER_KEY, or run both sides with "
                          "--insecure on a trusted network")
    if ca is None and speaks_tls:
        raise VireidError(f"the server at {address} uses TLS: pass --ca-certificate CA_CERT (the CA that signed its "
                          "certificate) to connect")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False

