"""Authentication and transport security of the scorer: TLS, mutual TLS, bearer tokens.

Server side:

* `TransportConfig` says how the server listens: TLS (`cert_file` + `key_file`), mutual
  TLS (plus `client_ca_file`: a client must present a certificate signed by that CA, else
  the TLS handshake is refused and the call never reaches the server), bearer tokens
  (`token_file` and/or `tokens`), or plaintext (`insecure=True`, only when asked for).
  `load()` reads and checks every PEM file up front, with errors naming the file.
* `server_credentials(cfg)` builds `grpc.ssl_server_credentials` from it.
* `TokenAuthInterceptor` checks `authorization: Bearer <token>` metadata on every call and
  answers UNAUTHENTICATED when it is missing or wrong. Tokens are kept only as SHA-256
  digests and compared with `hmac.compare_digest` against every configured token (no early
  exit). `grpc.health.v1.Health` (Check, Watch) is exempt so orchestrators can probe the
  server without a secret; reflection and every Scorer RPC need the token.
* `check_bind(address, transport)` is the rule `create_server` applies: plaintext needs an
  explicit `insecure=True`, except the library default (`transport=None`), which may bind
  loopback only.

Client side: `channel_credentials(ca, cert, key)` and `token_metadata(token)` /
`token_call_credentials(token)`; `read_token(path)` reads the first token of a file.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import ssl
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import grpc

__all__ = ["TransportConfig", "TransportError", "LoadedTransport", "server_credentials", "TokenAuthInterceptor",
           "UNAUTHENTICATED_EXEMPT", "check_bind", "is_loopback_address", "load_tokens", "read_token",
           "channel_credentials", "token_metadata", "token_call_credentials"]

log = logging.getLogger("distillguard.security")

# Methods a caller may use without a token: health probes from orchestrators/load balancers.
UNAUTHENTICATED_EXEMPT = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
_BEARER = "bearer "


class TransportError(ValueError):
    """A transport/auth setting that cannot work: a missing or bad file, a conflicting flag."""


# ------------------------------------------------------------------------------- files

def _read(path: str | Path, what: str, flag: str) -> bytes:
    p = Path(path)
    label = f"{what} {str(p)!r}" + (f" ({flag})" if flag else "")
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise TransportError(f"{label}: file not found") from None
    except IsADirectoryError:
        raise TransportError(f"{label}: is a directory, not a file") from None
    except OSError as e:
        raise TransportError(f"{label}: cannot read: {e.strerror or e}") from None
    if not data.strip():
        raise TransportError(f"{label}: file is empty")
    return data


def _read_pem_certs(path: str | Path, what: str, flag: str) -> bytes:
    data = _read(path, what, flag)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise TransportError(f"{what} {str(path)!r} ({flag}): no PEM certificate in it "
                             "(expected a '-----BEGIN CERTIFICATE-----' block)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as e:
        raise TransportError(f"{what} {str(path)!r} ({flag}): not a valid PEM certificate: {e}") from None
    return data


def _read_pem_key(path: str | Path, flag: str) -> bytes:
    data = _read(path, "TLS private key", flag)
    if b"PRIVATE KEY-----" not in data:
        raise TransportError(f"TLS private key {str(path)!r} ({flag}): no PEM private key in it "
                             "(expected a '-----BEGIN ... PRIVATE KEY-----' block)")
    if b"ENCRYPTED" in data.split(b"-----END", 1)[0]:
        raise TransportError(f"TLS private key {str(path)!r} ({flag}): is passphrase-encrypted; "
                             "gRPC needs an unencrypted key file (protect it with file permissions)")
    return data


def _check_pair(cert: str | Path, key: str | Path) -> None:
    """The key must be the certificate's (ssl checks it, as a server would at start)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as e:
        why = "the key does not match the certificate" if "MISMATCH" in str(e).upper() else str(e)
        raise TransportError(f"TLS certificate {str(cert)!r} (--tls-cert) and key {str(key)!r} (--tls-key) "
                             f"cannot be used together: {why}") from None


def _warn_if_readable_by_others(path: Path, what: str) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s %s is readable by group/others (mode %o); chmod 600 it", what, path, mode & 0o777)


def load_tokens(path: str | Path, flag: str = "--token-file") -> list[str]:
    """Tokens of a token file: one per line; blank lines and lines starting with '#' skipped,
    surrounding whitespace stripped. Never logs the tokens themselves."""
    data = _read(path, "token file", flag)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TransportError(f"token file {str(path)!r} ({flag}): not UTF-8 text") from None
    tokens = [t.strip() for t in text.splitlines()]
    tokens = [t for t in tokens if t and not t.startswith("#")]
    if not tokens:
        raise TransportError(f"token file {str(path)!r} ({flag}): no token in it (one token per line)")
    for i, t in enumerate(tokens):
        if any(c.isspace() for c in t) or not t.isprintable():
            raise TransportError(f"token file {str(path)!r} ({flag}): token #{i + 1} contains whitespace or "
                                 "control characters")
    _warn_if_readable_by_others(Path(path), "token file")
    return tokens


def read_token(path: str | Path, flag: str = "--token-file") -> str:
    """The client's token: the first token of the file (same format as the server's)."""
    return load_tokens(path, flag)[0]


# ------------------------------------------------------------------------------- config

@dataclass(frozen=True)
class TransportConfig:
    """How the scorer listens. Give cert_file + key_file for TLS (plus client_ca_file for
    mutual TLS), or insecure=True for plaintext; tokens work with either."""
    cert_file: Path | None = None           # PEM server certificate (chain), --tls-cert
    key_file: Path | None = None            # PEM unencrypted private key, --tls-key
    client_ca_file: Path | None = None      # PEM CA(s) client certificates must chain to, --tls-client-ca
    # With client_ca_file: refuse clients without a certificate signed by it. Must stay True:
    # gRPC's "optional" client auth requests a certificate but does not verify it at all.
    require_client_cert: bool = True
    token_file: Path | None = None          # one bearer token per line, --token-file
    tokens: tuple[str, ...] = field(default=(), repr=False)   # extra tokens (library use); never printed
    insecure: bool = False                  # plaintext listener, only when asked for (--insecure)

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    @property
    def mtls(self) -> bool:
        return self.client_ca_file is not None

    @property
    def auth_tokens(self) -> bool:
        return self.token_file is not None or bool(self.tokens)

    def validate(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            given, missing = ("--tls-cert", "--tls-key") if self.cert_file is not None else ("--tls-key", "--tls-cert")
            raise TransportError(f"{given} needs {missing} too (a TLS certificate and its private key)")
        if self.client_ca_file is not None and self.cert_file is None:
            raise TransportError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        if self.client_ca_file is not None and not self.require_client_cert:
            raise TransportError("require_client_cert=False with a client CA: gRPC would request client "
                                 "certificates without verifying them, which authenticates no one; keep it "
                                 "True (mutual TLS) or drop the client CA")
        if self.insecure and self.tls:
            raise TransportError("--insecure and --tls-cert/--tls-key both given: choose one")
        if not self.tls and not self.insecure:
            raise TransportError("no transport security: give --tls-cert and --tls-key (TLS), "
                                 "or --insecure to serve plaintext on purpose")

    def load(self) -> "LoadedTransport":
        """Validate the settings and read every file (errors name the file)."""
        self.validate()
        cert = key = ca = None
        if self.tls:
            cert = _read_pem_certs(self.cert_file, "TLS certificate", "--tls-cert")
            key = _read_pem_key(self.key_file, "--tls-key")
            _check_pair(self.cert_file, self.key_file)
            _warn_if_readable_by_others(Path(self.key_file), "TLS private key")
        if self.client_ca_file is not None:
            ca = _read_pem_certs(self.client_ca_file, "client CA certificate", "--tls-client-ca")
        tokens = list(self.tokens)
        if self.token_file is not None:
            tokens += load_tokens(self.token_file)
        if any(not t for t in tokens):
            raise TransportError("an empty bearer token was given")
        return LoadedTransport(self, cert, key, ca, tuple(hashlib.sha256(t.encode()).digest() for t in tokens))


@dataclass(frozen=True)
class LoadedTransport:
    config: TransportConfig
    cert_pem: bytes | None = field(default=None, repr=False)
    key_pem: bytes | None = field(default=None, repr=False)
    client_ca_pem: bytes | None = field(default=None, repr=False)
    token_digests: tuple[bytes, ...] = field(default=(), repr=False)

    def describe(self) -> str:
        """For the log: the mode, never a secret."""
        c = self.config
        if not c.tls:
            mode = "INSECURE plaintext"
        else:
            mode = "mutual TLS" if c.mtls else "TLS"
        auth = f", bearer tokens ({len(self.token_digests)} configured)" if self.token_digests else ""
        return mode + auth


def server_credentials(cfg: TransportConfig | LoadedTransport) -> grpc.ServerCredentials:
    """grpc.ssl_server_credentials for a TLS config (require_client_auth for mTLS)."""
    lt = cfg if isinstance(cfg, LoadedTransport) else cfg.load()
    if lt.cert_pem is None:
        raise TransportError("server_credentials: no TLS certificate configured")
    return grpc.ssl_server_credentials(
        [(lt.key_pem, lt.cert_pem)], root_certificates=lt.client_ca_pem,
        require_client_auth=lt.client_ca_pem is not None)


# ------------------------------------------------------------------------------- bind policy

def _host(address: str) -> str:
    if address.startswith("[") and "]" in address:
        return address[1:address.index("]")]
    return address.rsplit(":", 1)[0] if ":" in address else address


def is_loopback_address(address: str) -> bool:
    """Does "host:port" bind only loopback (127.0.0.0/8, ::1, localhost) or a unix socket?"""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = _host(address)
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False          # a name, "0.0.0.0", "[::]": reachable from other machines


def check_bind(address: str, transport: TransportConfig | None) -> None:
    """Refuse a plaintext listener nobody asked for. transport=None (library and tests)
    is plaintext on loopback only; a TransportConfig must have TLS or insecure=True."""
    if transport is None:
        if not is_loopback_address(address):
            raise TransportError(
                f"refusing to bind {address} without TLS: give --tls-cert/--tls-key "
                "(a TransportConfig), or --insecure (TransportConfig(insecure=True)) to serve "
                "unencrypted, unauthenticated traffic on purpose")
        return
    transport.validate()


# ------------------------------------------------------------------------------- interceptor

def _bearer(metadata) -> str | None:
    for k, v in metadata or ():
        if k == "authorization":
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            return v[len(_BEARER):].strip() if v[:len(_BEARER)].lower() == _BEARER else ""
    return None


def _refuse(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that aborts with UNAUTHENTICATED."""
    def abort(request_or_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kw = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort, **kw)
    return grpc.unary_unary_rpc_method_handler(abort, **kw)


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Checks `authorization: Bearer <token>` on every call except the health service.

    `on_failure(reason)` is called for each refused call (reason: "missing" or "invalid");
    the server counts them in distillguard_auth_failures_total."""

    def __init__(self, token_digests: Iterable[bytes], on_failure: Callable[[str], None] | None = None,
                 exempt: frozenset[str] = UNAUTHENTICATED_EXEMPT):
        self._digests = tuple(token_digests)
        if not self._digests:
            raise TransportError("TokenAuthInterceptor needs at least one token")
        self._on_failure = on_failure
        self._exempt = exempt

    def _valid(self, token: str) -> bool:
        d = hashlib.sha256(token.encode("utf-8")).digest()
        ok = False
        for ref in self._digests:          # every token is compared: time does not tell which matched
            ok |= hmac.compare_digest(d, ref)
        return ok

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method in self._exempt:
            return handler
        token = _bearer(handler_call_details.invocation_metadata)
        if token and self._valid(token):
            return handler
        reason = "missing" if token is None else "invalid"
        if self._on_failure is not None:
            self._on_failure(reason)
        log.info("refused %s: %s bearer token", handler_call_details.method, reason)
        return _refuse(handler, "missing bearer token (authorization: Bearer <token>)" if reason == "missing"
                       else "invalid bearer token")


# ------------------------------------------------------------------------------- client side

def channel_credentials(ca: str | Path | None = None, cert: str | Path | None = None,
                        key: str | Path | None = None) -> grpc.ChannelCredentials:
    """TLS channel credentials: `ca` verifies the server (None: the system's roots);
    `cert` + `key` are the client's certificate for mutual TLS."""
    if (cert is None) != (key is None):
        raise TransportError("a client certificate needs its key and a key its certificate (--tls-cert and --tls-key)")
    root = _read_pem_certs(ca, "CA certificate", "--tls-ca") if ca is not None else None
    chain = _read_pem_certs(cert, "client certificate", "--tls-cert") if cert is not None else None
    pkey = _read_pem_key(key, "--tls-key") if key is not None else None
    if cert is not None:
        _check_pair(cert, key)
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=pkey, certificate_chain=chain)


def token_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying the bearer token (works on TLS and plaintext channels)."""
    if not token:
        raise TransportError("empty bearer token")
    return (("authorization", f"Bearer {token}"),)


def token_call_credentials(token: str) -> grpc.CallCredentials:
    """The token as call credentials (gRPC sends these on TLS channels only): combine with
    `grpc.composite_channel_credentials(channel_credentials(...), token_call_credentials(t))`."""
    if not token:
        raise TransportError("empty bearer token")
    return grpc.access_token_call_credentials(token)
