"""Transport security and auth of the scorer over real sockets and real TLS channels:
TLS, mutual TLS (refused at the handshake), bearer tokens (UNAUTHENTICATED, counted),
health open to probes, --no-admin, --no-reflection, and the CLI's refusals.

Certificates are throwaway: a CA, a server certificate for localhost/127.0.0.1, a client
certificate from that CA and one from another CA, written to a temporary directory."""
from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from distillguard.cli import main
from distillguard.serving import DEFAULT_BUNDLE
from distillguard.serving.client import ClientConfig, ScorerClient
from distillguard.serving.harness import start_serve
from distillguard.serving.replay import ReplayError, replay
from distillguard.serving.security import (TransportConfig, TransportError, channel_credentials, check_bind,
                                           is_loopback_address, load_tokens, token_call_credentials,
                                           token_metadata)
from distillguard.serving.server import SERVICE, ServeConfig, create_server
from distillguard.serving.stubs import pb, pb_grpc

T0 = 1_780_000_000.0
TOKEN = "s3cret-token-for-tests-0123456789"
OTHER_TOKEN = "second-token-abcdef"
TIMEOUT = 10


# ----------------------------------------------------------------------------- certificates

def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject_key, subject: str, issuer_key, issuer: str, *, ca: bool, san=None, usage=None):
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, encipher_only=False,
                                          decipher_only=False), critical=True)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(d: Path, name: str, cert=None, key=None) -> Path:
    if cert is not None:
        (d / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        (d / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
        (d / f"{name}.key").chmod(0o600)
    return d / f"{name}.pem"


class Certs:
    def __init__(self, d: Path):
        self.dir = d
        ca_key, rogue_key = _key(), _key()
        ca = _cert(ca_key, "distillguard test CA", ca_key, "distillguard test CA", ca=True)
        rogue = _cert(rogue_key, "rogue CA", rogue_key, "rogue CA", ca=True)
        srv_key, cli_key, bad_key = _key(), _key(), _key()
        srv = _cert(srv_key, "localhost", ca_key, "distillguard test CA", ca=False,
                    san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                    usage=[ExtendedKeyUsageOID.SERVER_AUTH])
        cli = _cert(cli_key, "gateway", ca_key, "distillguard test CA", ca=False,
                    usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
        bad = _cert(bad_key, "gateway", rogue_key, "rogue CA", ca=False, usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
        self.ca = _write(d, "ca", ca)
        self.rogue_ca = _write(d, "rogue-ca", rogue)
        self.server_cert = _write(d, "server", srv, srv_key)
        self.server_key = d / "server.key"
        self.client_cert = _write(d, "client", cli, cli_key)
        self.client_key = d / "client.key"
        self.bad_client_cert = _write(d, "bad-client", bad, bad_key)
        self.bad_client_key = d / "bad-client.key"
        self.tokens = d / "tokens.txt"
        self.tokens.write_text(f"# scorer tokens\n{TOKEN}\n\n  {OTHER_TOKEN}  \n")
        self.tokens.chmod(0o600)
        self.client_token = d / "client-token.txt"
        self.client_token.write_text(TOKEN + "\n")
        self.client_token.chmod(0o600)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


def _creds(certs: Certs, client: str | None = None) -> grpc.ChannelCredentials:
    if client == "good":
        return channel_credentials(certs.ca, certs.client_cert, certs.client_key)
    if client == "rogue":
        return channel_credentials(certs.ca, certs.bad_client_cert, certs.bad_client_key)
    return channel_credentials(certs.ca)


def _req(account: str, event: str = "e1") -> "pb.ScoreRequest":
    return pb.ScoreRequest(account_id=account, event_id=event, ts=T0, prompt_tokens=100, max_tokens=512,
                           template_hash="00000000000000aa")


def _requests(srv, method: str = "Score", code: str = "OK") -> float:
    v = srv.metrics.registry.get_sample_value("distillguard_requests_total", {"method": method, "code": code})
    return v or 0.0


def _auth_failures(srv, reason: str) -> float:
    return srv.metrics.registry.get_sample_value("distillguard_auth_failures_total", {"reason": reason})


def _code(fn) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code()


# ----------------------------------------------------------------------------- servers

@pytest.fixture(scope="module")
def tls_server(certs):
    """TLS only (no client certificates, no tokens), reflection and admin on."""
    srv, port = create_server("127.0.0.1:0", DEFAULT_BUNDLE, ServeConfig(transport=TransportConfig(
        cert_file=certs.server_cert, key_file=certs.server_key)))
    yield srv, f"127.0.0.1:{port}"
    srv.stop(0)


@pytest.fixture(scope="module")
def mtls_server(certs):
    srv, port = create_server("127.0.0.1:0", DEFAULT_BUNDLE, ServeConfig(transport=TransportConfig(
        cert_file=certs.server_cert, key_file=certs.server_key, client_ca_file=certs.ca)))
    yield srv, f"127.0.0.1:{port}"
    srv.stop(0)


@pytest.fixture(scope="module")
def token_server(certs):
    """TLS + bearer tokens, reflection and admin RPCs disabled."""
    srv, port = create_server("127.0.0.1:0", DEFAULT_BUNDLE, ServeConfig(
        reflection=False, admin=False,
        transport=TransportConfig(cert_file=certs.server_cert, key_file=certs.server_key, token_file=certs.tokens)))
    yield srv, f"127.0.0.1:{port}"
    srv.stop(0)


# ----------------------------------------------------------------------------- TLS

def test_tls_call_succeeds_and_plaintext_to_tls_fails(certs, tls_server):
    srv, target = tls_server
    with grpc.secure_channel(target, _creds(certs)) as ch:
        r = pb_grpc.ScorerStub(ch).Score(_req("acct-tls"), timeout=TIMEOUT)
        assert r.model_version and r.events_in_session == 1
    before = _requests(srv)
    with grpc.insecure_channel(target) as ch:
        assert _code(lambda: pb_grpc.ScorerStub(ch).Score(_req("acct-plain"), timeout=TIMEOUT)) \
            == grpc.StatusCode.UNAVAILABLE
    assert _requests(srv) == before                 # it never reached the servicer


def test_tls_client_that_does_not_trust_the_server_ca_is_refused(certs, tls_server):
    _, target = tls_server
    wrong_trust = channel_credentials(certs.rogue_ca)
    with grpc.secure_channel(target, wrong_trust) as ch:
        assert _code(lambda: pb_grpc.ScorerStub(ch).Score(_req("acct-x"), timeout=TIMEOUT)) \
            == grpc.StatusCode.UNAVAILABLE


def test_admin_and_reflection_on_by_default(certs, tls_server):
    """The controls of --no-admin / --no-reflection: the same calls succeed on a default server."""
    _, target = tls_server
    with grpc.secure_channel(target, _creds(certs)) as ch:
        # Reload reaches the servicer (a missing bundle path: refused for that reason, not by policy)
        assert _code(lambda: pb_grpc.ScorerStub(ch).Reload(pb.ReloadRequest(path="/nonexistent/bundle"),
                                                           timeout=TIMEOUT)) == grpc.StatusCode.FAILED_PRECONDITION
        services = _reflection_services(ch)
    assert SERVICE in services and "grpc.health.v1.Health" in services


def _reflection_services(ch, metadata=None) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                        timeout=TIMEOUT, metadata=metadata)
    return [s.name for r in replies for s in r.list_services_response.service]


# ----------------------------------------------------------------------------- mutual TLS

def test_mtls_with_the_right_client_certificate_succeeds(certs, mtls_server):
    _, target = mtls_server
    with grpc.secure_channel(target, _creds(certs, "good")) as ch:
        assert pb_grpc.ScorerStub(ch).Score(_req("acct-mtls"), timeout=TIMEOUT).model_version


@pytest.mark.parametrize("client", ["rogue", None], ids=["wrong-ca-cert", "no-cert"])
def test_mtls_refuses_a_wrong_or_missing_client_certificate_at_the_handshake(certs, mtls_server, client):
    srv, target = mtls_server
    before = _requests(srv)
    with grpc.secure_channel(target, _creds(certs, client)) as ch:
        assert _code(lambda: pb_grpc.ScorerStub(ch).Score(_req("acct-rogue"), timeout=TIMEOUT)) \
            == grpc.StatusCode.UNAVAILABLE
        # Health is no way around it either: the connection itself is refused.
        assert _code(lambda: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                                  timeout=TIMEOUT)) == grpc.StatusCode.UNAVAILABLE
    assert _requests(srv) == before


# ----------------------------------------------------------------------------- bearer tokens

def test_token_missing_wrong_and_right(certs, token_server):
    srv, target = token_server
    missing0, invalid0 = _auth_failures(srv, "missing"), _auth_failures(srv, "invalid")
    ok0 = _requests(srv)
    with grpc.secure_channel(target, _creds(certs)) as ch:
        stub = pb_grpc.ScorerStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            stub.Score(_req("acct-tok"), timeout=TIMEOUT)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "missing" in e.value.details()
        for bad in ("wrong-token", TOKEN + "x", TOKEN[:-1]):
            assert _code(lambda: stub.Score(_req("acct-tok"), timeout=TIMEOUT,
                                            metadata=token_metadata(bad))) == grpc.StatusCode.UNAUTHENTICATED
        # not a Bearer scheme
        assert _code(lambda: stub.Score(_req("acct-tok"), timeout=TIMEOUT,
                                        metadata=(("authorization", f"Basic {TOKEN}"),))) \
            == grpc.StatusCode.UNAUTHENTICATED
        assert _requests(srv) == ok0                # refused before the servicer
        for tok in (TOKEN, OTHER_TOKEN):            # every token of the file is accepted
            r = stub.Score(_req("acct-tok", f"e-{tok[:4]}"), timeout=TIMEOUT, metadata=token_metadata(tok))
            assert r.model_version
    with grpc.secure_channel(target, grpc.composite_channel_credentials(
            _creds(certs), token_call_credentials(TOKEN))) as ch:
        assert pb_grpc.ScorerStub(ch).Score(_req("acct-tok", "e-cc"), timeout=TIMEOUT).model_version
    assert _requests(srv) == ok0 + 3
    assert _auth_failures(srv, "missing") == missing0 + 1
    assert _auth_failures(srv, "invalid") == invalid0 + 4


def test_health_needs_no_token(certs, token_server):
    srv, target = token_server
    missing0 = _auth_failures(srv, "missing")
    with grpc.secure_channel(target, _creds(certs)) as ch:
        h = health_pb2_grpc.HealthStub(ch)
        for name in ("", SERVICE):
            assert h.Check(health_pb2.HealthCheckRequest(service=name), timeout=TIMEOUT).status == \
                health_pb2.HealthCheckResponse.SERVING
        watch = h.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=TIMEOUT)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        # ...but the rest of the API does, reflection and session reads included.
        assert _code(lambda: pb_grpc.ScorerStub(ch).GetSession(pb.SessionRef(account_id="a"), timeout=TIMEOUT)) \
            == grpc.StatusCode.UNAUTHENTICATED
    assert _auth_failures(srv, "missing") == missing0 + 1


def test_no_admin_refuses_reload_and_no_reflection_removes_the_service(certs, token_server):
    srv, target = token_server
    md = token_metadata(TOKEN)
    version = srv.scorer.bundle.version
    with grpc.secure_channel(target, _creds(certs)) as ch:
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.ScorerStub(ch).Reload(pb.ReloadRequest(), timeout=TIMEOUT, metadata=md)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "disabled" in e.value.details()
        assert _code(lambda: _reflection_services(ch, md)) == grpc.StatusCode.UNIMPLEMENTED
    assert srv.scorer.bundle.version == version
    assert _requests(srv, "Reload", "PERMISSION_DENIED") == 1
    assert srv.metrics.registry.get_sample_value("distillguard_reloads_total", {"result": "ok"}) is None


def test_client_library_with_tls_and_token(certs, token_server):
    from prometheus_client import CollectorRegistry

    _, target = token_server
    good = ScorerClient(ClientConfig(target, deadline_s=5.0, channel_credentials=_creds(certs), token=TOKEN),
                        registry=CollectorRegistry())
    bad = ScorerClient(ClientConfig(target, deadline_s=5.0, channel_credentials=_creds(certs), token="nope"),
                       registry=CollectorRegistry())
    try:
        v = good.score("acct-client", "c1", T0, 50)
        assert not v.fail_open and v.model_version, v.error
        assert good.complete("acct-client", "c1", 10) is True
        assert TOKEN not in repr(good.config)
        v = bad.score("acct-client", "c2", T0 + 1, 50)
        assert v.fail_open and "UNAUTHENTICATED" in v.error
    finally:
        good.close()
        bad.close()


def test_replay_over_tls_with_a_token(certs, token_server, tmp_path):
    from distillguard.training.simulate import SimConfig, simulate, write

    _, target = token_server
    ev, lab = simulate(SimConfig(seed=5, accounts=8, days=1))
    path, _ = write(ev, lab, tmp_path)
    n = min(20, len(ev))
    assert n >= 5
    s = replay(target, path, limit=n, concurrency=2, show=False, tls_ca=certs.ca, token_file=certs.client_token)
    assert s["events"] == n and s["fail_open"] == 0 and sum(s["labels"].values()) == n, s
    with pytest.raises(ReplayError, match="UNAUTHENTICATED"):                         # no token: refused up front
        replay(target, path, limit=5, concurrency=1, show=False, tls_ca=certs.ca)
    assert main(["replay", "--target", target, "--events", str(path), "--limit", "5", "-q",
                 "--tls-ca", str(certs.ca), "--token-file", str(certs.client_token)]) == 0


def test_token_over_explicit_insecure_transport_warns(certs, caplog):
    with caplog.at_level(logging.WARNING, logger="distillguard.server"):
        srv, port = create_server("127.0.0.1:0", DEFAULT_BUNDLE, ServeConfig(transport=TransportConfig(
            insecure=True, tokens=(TOKEN,))))
    try:
        assert any("INSECURE" in r.getMessage() and "unencrypted" in r.getMessage() for r in caplog.records)
        assert all(TOKEN not in r.getMessage() for r in caplog.records)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.ScorerStub(ch)
            assert _code(lambda: stub.Score(_req("acct-i"), timeout=TIMEOUT)) == grpc.StatusCode.UNAUTHENTICATED
            assert stub.Score(_req("acct-i"), timeout=TIMEOUT, metadata=token_metadata(TOKEN)).model_version
    finally:
        srv.stop(0)


# ----------------------------------------------------------------------------- configuration errors

def test_bind_policy():
    assert is_loopback_address("127.0.0.1:0") and is_loopback_address("localhost:50051")
    assert is_loopback_address("[::1]:50051") and is_loopback_address("127.0.0.2:1")
    assert not is_loopback_address("0.0.0.0:50051") and not is_loopback_address("[::]:50051")
    assert not is_loopback_address("10.0.0.5:50051") and not is_loopback_address("scorer.internal:50051")
    check_bind("127.0.0.1:0", None)
    with pytest.raises(TransportError, match="refusing to bind 0.0.0.0:50051 without TLS"):
        check_bind("0.0.0.0:50051", None)
    with pytest.raises(TransportError, match="--insecure"):
        check_bind("127.0.0.1:0", TransportConfig())                # neither TLS nor insecure
    check_bind("0.0.0.0:50051", TransportConfig(insecure=True))     # asked for explicitly
    with pytest.raises(TransportError, match="without verifying"):
        check_bind("127.0.0.1:0", TransportConfig(cert_file=Path("c"), key_file=Path("k"),
                                                  client_ca_file=Path("ca"), require_client_cert=False))
    with pytest.raises(TransportError, match="choose one"):
        check_bind("127.0.0.1:0", TransportConfig(cert_file=Path("c"), key_file=Path("k"), insecure=True))


def test_create_server_refuses_non_loopback_plaintext_before_binding():
    with pytest.raises(TransportError, match="0.0.0.0"):
        create_server("0.0.0.0:0", DEFAULT_BUNDLE)


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_cli_serve_refuses_plaintext_unless_insecure(host, capsys):
    assert main(["serve", "--host", host, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert f"refusing to serve on {host}:0" in err and "--tls-cert" in err and "--insecure" in err
    if host == "0.0.0.0":
        assert "non-loopback" in err


def test_cli_serve_missing_or_bad_files_are_named(certs, tmp_path, capsys):
    missing = tmp_path / "nope.pem"
    assert main(["serve", "--port", "0", "--tls-cert", str(missing), "--tls-key", str(certs.server_key)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "--tls-cert" in err and "not found" in err

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert main(["serve", "--port", "0", "--tls-cert", str(certs.server_cert), "--tls-key", str(garbage)]) == 2
    err = capsys.readouterr().err
    assert str(garbage) in err and "private key" in err

    # a key that is not the certificate's
    assert main(["serve", "--port", "0", "--tls-cert", str(certs.server_cert),
                 "--tls-key", str(certs.client_key)]) == 2
    assert "does not match" in capsys.readouterr().err

    assert main(["serve", "--port", "0", "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key),
                 "--tls-client-ca", str(tmp_path / "no-ca.pem")]) == 2
    err = capsys.readouterr().err
    assert "no-ca.pem" in err and "--tls-client-ca" in err

    assert main(["serve", "--port", "0", "--tls-cert", str(certs.server_cert)]) == 2
    assert "--tls-cert needs --tls-key" in capsys.readouterr().err

    assert main(["serve", "--port", "0", "--insecure", "--token-file", str(tmp_path / "tokens.txt")]) == 2
    err = capsys.readouterr().err
    assert "tokens.txt" in err and "--token-file" in err


def test_token_file_format(tmp_path):
    p = tmp_path / "t"
    p.write_text("# only a comment\n\n")
    with pytest.raises(TransportError, match="no token"):
        load_tokens(p)
    p.write_text("a b\n")
    with pytest.raises(TransportError, match="whitespace"):
        load_tokens(p)
    p.write_text("one\n  two \n#three\n")
    assert load_tokens(p) == ["one", "two"]


def test_client_side_credentials_errors(certs, tmp_path):
    with pytest.raises(TransportError, match="--tls-key"):
        channel_credentials(certs.ca, cert=certs.client_cert)
    with pytest.raises(TransportError, match="missing.pem"):
        channel_credentials(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="token"):
        ClientConfig("127.0.0.1:1", token="has space")


# ----------------------------------------------------------------------------- the CLI as a process

def test_cli_serve_process_with_tls_token_no_admin(certs):
    p = start_serve("--port", "0", "--tls-cert", certs.server_cert, "--tls-key", certs.server_key,
                    "--token-file", certs.tokens, "--no-admin", "--no-reflection", credentials=_creds(certs))
    try:
        with grpc.secure_channel(p.target, _creds(certs)) as ch:
            stub = pb_grpc.ScorerStub(ch)
            assert _code(lambda: stub.Score(_req("acct-p"), timeout=TIMEOUT)) == grpc.StatusCode.UNAUTHENTICATED
            md = token_metadata(TOKEN)
            assert stub.Score(_req("acct-p"), timeout=TIMEOUT, metadata=md).model_version
            assert _code(lambda: stub.Reload(pb.ReloadRequest(), timeout=TIMEOUT, metadata=md)) \
                == grpc.StatusCode.PERMISSION_DENIED
            assert _code(lambda: _reflection_services(ch, md)) == grpc.StatusCode.UNIMPLEMENTED
    finally:
        p.stop(timeout=30)
    out = p.logs()
    assert p.returncode == 0, out
    assert "mutual TLS" not in out and '"mode": "TLS, bearer tokens (2 configured)"' in out
    assert TOKEN not in out and OTHER_TOKEN not in out
    assert "INSECURE" not in out
