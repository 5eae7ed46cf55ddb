"""Redis over TLS with a password or an ACL user, S3 over TLS, and secrets from files: all through settings.

Every server here presents a certificate from a CA made for this module (tests/support/tls.py), and
every client is handed that CA explicitly.  The machine-wide CA variables (SSL_CERT_FILE, AWS_CA_BUNDLE,
...) are removed for each test, so nothing passes thanks to them, and the "no CA given" cases fail for
the right reason.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
import redis
from celery import Celery

from cutout_fleet.config.settings import S3Settings, Settings, load_settings
from cutout_fleet.connections import celery_broker_options, redis_client
from cutout_fleet.errors import ConfigError
from tests.support.processes import redis_server_binary
from tests.support.servers import free_port
from tests.support.tls import CertFiles, make_test_ca

pytestmark = pytest.mark.integration

PASSWORD = "default-pw-7f3a9c"
ACL_USER, ACL_PASSWORD = "fleet", "fleet-pw-91c2e4"
# The fleet's keys: job state (cf:*), the queues with kombu's priority sub-lists (cpu\x06\x163 ...),
# kombu's bindings and unacked bookkeeping; &* for the event and control channels.
ACL_RULES = ("on", f">{ACL_PASSWORD}", "~cf:*", "~cpu*", "~gpu*", "~_kombu.*", "~unacked*", "&*", "+@all")
CA_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE")
# 127.0.0.2 is loopback too, but absent from the server certificate: the wrong-name case.
CERT_HOST, OTHER_HOST = "127.0.0.1", "127.0.0.2"
START_TIMEOUT_S = 30.0
# A refusal (bad password, untrusted certificate) must not wait out the retry backoff (~8-15 s).
REFUSAL_WITHIN_S = 3.0


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            socket.create_connection((CERT_HOST, port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"{what} did not start on port {port}: {log.read_text()[-2000:]}")
            time.sleep(0.05)


@dataclass(frozen=True)
class TLSRedis:
    port: int
    certs: CertFiles

    def url(self, userinfo: str = f":{PASSWORD}", host: str = CERT_HOST) -> str:
        return f"rediss://{userinfo}@{host}:{self.port}/0"


@contextmanager
def tls_redis_server(folder: Path, certs: CertFiles, *, client_certs: bool) -> Iterator[TLSRedis]:
    """redis-server with TLS only (no plain port), a password for the default user and an ACL user."""
    exe = redis_server_binary(tls=True)
    if exe is None:
        pytest.fail("these tests need a redis-server built with TLS (apt-get install redis-server)")
    port = free_port()
    log = folder / f"redis-{port}.log"
    argv = [
        exe,
        *("--port", "0", "--tls-port", str(port), "--bind", CERT_HOST, OTHER_HOST),
        *("--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key)),
        *("--tls-ca-cert-file", str(certs.ca_file), "--tls-auth-clients", "yes" if client_certs else "no"),
        *("--requirepass", PASSWORD, "--user", ACL_USER, *ACL_RULES),
        *("--save", "", "--appendonly", "no", "--dir", str(folder), "--logfile", str(log)),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, "redis-server", log)
        yield TLSRedis(port, certs)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(autouse=True)
def no_global_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """A second CA that signed nothing the servers present."""
    return make_test_ca(tmp_path_factory.mktemp("other-ca"), name="someone-else")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, certs: CertFiles) -> Iterator[TLSRedis]:
    with tls_redis_server(tmp_path_factory.mktemp("redis-tls"), certs, client_certs=False) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_redis(tmp_path_factory: pytest.TempPathFactory, certs: CertFiles) -> Iterator[TLSRedis]:
    with tls_redis_server(tmp_path_factory.mktemp("redis-mtls"), certs, client_certs=True) as server:
        yield server


def tls_settings(url: str, ca_file: Path | None, **tls: Any) -> Settings:
    return load_settings(redis_url=url, redis_tls={"ca_file": ca_file, **tls})


@pytest.fixture
def fleet_settings(tls_redis: TLSRedis) -> Iterator[Settings]:
    """Settings for the ACL user over verified TLS, on an emptied database."""
    settings = tls_settings(tls_redis.url(f"{ACL_USER}:{ACL_PASSWORD}"), tls_redis.certs.ca_file)
    redis_client(tls_settings(tls_redis.url(), tls_redis.certs.ca_file)).flushdb()
    yield settings


def refused_within(limit_s: float, call: Any, error: type[BaseException]) -> BaseException:
    started = time.monotonic()
    with pytest.raises(error) as info:
        call()
    assert time.monotonic() - started < limit_s, "a refusal was retried as if it were a dropped connection"
    return info.value


# -- Redis over TLS -------------------------------------------------------------------------------------


def test_a_rediss_url_with_the_ca_file_connects_with_the_password_from_the_url(tls_redis: TLSRedis) -> None:
    client = redis_client(tls_settings(tls_redis.url(), tls_redis.certs.ca_file))
    assert client.ping() is True
    assert client.connection_pool.connection_kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED


def test_an_acl_user_from_the_url_reaches_the_fleet_keys_and_no_others(fleet_settings: Settings) -> None:
    client = redis_client(fleet_settings, decode_responses=True)
    assert client.acl_whoami() == ACL_USER
    client.set("cf:probe", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set("not-the-fleets", "1")


def test_a_server_signed_by_another_ca_is_refused_at_once(tls_redis: TLSRedis, other_ca: CertFiles) -> None:
    client = redis_client(tls_settings(tls_redis.url(), other_ca.ca_file))
    error = refused_within(REFUSAL_WITHIN_S, client.ping, redis.ConnectionError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(error)


def test_without_a_ca_file_the_system_trust_store_does_not_trust_a_private_ca(tls_redis: TLSRedis) -> None:
    client = redis_client(tls_settings(tls_redis.url(), None))
    error = refused_within(REFUSAL_WITHIN_S, client.ping, redis.ConnectionError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(error)


def test_an_address_not_in_the_server_certificate_is_refused(tls_redis: TLSRedis) -> None:
    client = redis_client(tls_settings(tls_redis.url(host=OTHER_HOST), tls_redis.certs.ca_file))
    error = refused_within(REFUSAL_WITHIN_S, client.ping, redis.ConnectionError)
    assert "mismatch" in str(error)


def test_with_check_hostname_off_the_name_is_not_checked_but_the_chain_still_is(
    tls_redis: TLSRedis, other_ca: CertFiles
) -> None:
    url = tls_redis.url(host=OTHER_HOST)
    assert redis_client(tls_settings(url, tls_redis.certs.ca_file, check_hostname=False)).ping() is True
    untrusted = redis_client(tls_settings(url, other_ca.ca_file, check_hostname=False))
    refused_within(REFUSAL_WITHIN_S, untrusted.ping, redis.ConnectionError)


def test_a_wrong_password_is_refused_at_once(tls_redis: TLSRedis) -> None:
    client = redis_client(
        tls_settings(tls_redis.url(f"{ACL_USER}:not-the-password"), tls_redis.certs.ca_file)
    )
    refused_within(REFUSAL_WITHIN_S, client.ping, redis.AuthenticationError)


def test_mutual_tls_connects_with_the_client_certificate(mtls_redis: TLSRedis) -> None:
    certs = mtls_redis.certs
    settings = tls_settings(
        mtls_redis.url(), certs.ca_file, cert_file=certs.client_cert, key_file=certs.client_key
    )
    assert redis_client(settings).ping() is True


def test_mutual_tls_without_a_client_certificate_is_refused(mtls_redis: TLSRedis) -> None:
    client = redis_client(tls_settings(mtls_redis.url(), mtls_redis.certs.ca_file))
    # No timing check: in TLS 1.3 the server's "certificate required" alert can race its close, and a
    # bare close looks like a dropped connection, so it may be retried before the alert is seen.
    with pytest.raises(redis.ConnectionError):
        client.ping()


# -- Celery over TLS --------------------------------------------------------------------------------------


def test_kombu_alone_would_not_verify_a_rediss_broker(fleet_settings: Settings) -> None:
    """Why every Celery app must take celery_broker_options: kombu's fallback turns verification off."""
    app = Celery("bare", broker=fleet_settings.redis_url)
    assert app.connection_for_write().ssl == {"ssl_cert_reqs": ssl.CERT_NONE}


def test_celery_broker_options_are_empty_for_a_plain_redis_url() -> None:
    assert celery_broker_options(load_settings(redis_url="redis://127.0.0.1:6379/0")) == {}


def test_a_celery_app_with_the_broker_options_sends_over_verified_tls(fleet_settings: Settings) -> None:
    app = Celery("sender")
    app.conf.update(broker_url=fleet_settings.redis_url, **celery_broker_options(fleet_settings))
    assert app.connection_for_write().ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    app.send_task("cutout.tls_probe", args=[1], queue="cpu")
    assert redis_client(fleet_settings).llen("cpu") == 1


def test_the_worker_app_verifies_a_rediss_broker(fleet_settings: Settings) -> None:
    from cutout_fleet.worker.celery_app import configure

    app = Celery("worker-probe")
    configure(app, fleet_settings)
    assert app.connection_for_write().ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert (
        app.conf.broker_transport_options["visibility_timeout"] == fleet_settings.worker.visibility_timeout_s
    )
    app.send_task("cutout.tls_probe", args=[1], queue="gpu")
    assert redis_client(fleet_settings).llen("gpu") == 1


def test_the_producer_publishes_and_keeps_job_state_over_verified_tls(fleet_settings: Settings) -> None:
    from cutout_fleet.cli.common import job_store, publisher
    from cutout_fleet.messages import TaskMessage
    from cutout_fleet.options import ImageOptions
    from cutout_fleet.state import JobSpec

    store = job_store(fleet_settings)
    store.create(JobSpec("tls-job", "s3://in/p/", "s3://out/o", "u2netp", "cpu", {"model": "u2netp"}))
    message = TaskMessage(
        job_id="tls-job", source="s3://in/p/", out="s3://out/o", options=ImageOptions(), keys=["p/a.png"]
    )
    publisher(fleet_settings).publish("cpu", [message])
    record = store.get("tls-job")
    assert record is not None and record.state == "running"
    queued = redis_client(fleet_settings).lrange("cpu", 0, -1)
    assert len(queued) == 1 and b"tls-job" in queued[0]


# -- Secrets ------------------------------------------------------------------------------------------------


@pytest.fixture
def secrets_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty secrets dir named by CUTOUT_SECRETS_DIR, no CUTOUT_REDIS_URL, no stray .env."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    monkeypatch.setenv("CUTOUT_SECRETS_DIR", str(folder))
    monkeypatch.delenv("CUTOUT_REDIS_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    return folder


def test_a_redis_url_in_the_secrets_dir_is_used_and_connects(
    secrets_folder: Path, tls_redis: TLSRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    (secrets_folder / "cutout_redis_url").write_text(tls_redis.url(f"{ACL_USER}:{ACL_PASSWORD}") + "\n")
    monkeypatch.setenv("CUTOUT_REDIS_TLS__CA_FILE", str(tls_redis.certs.ca_file))
    settings = load_settings()
    assert settings.redis_url == tls_redis.url(f"{ACL_USER}:{ACL_PASSWORD}")
    assert redis_client(settings).ping() is True


def test_nested_fields_come_from_files_named_like_their_variables(secrets_folder: Path) -> None:
    (secrets_folder / "cutout_s3__region").write_text("eu-west-1")
    assert load_settings().s3.region == "eu-west-1"


def test_an_environment_variable_wins_over_a_secret_file(
    secrets_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (secrets_folder / "cutout_redis_url").write_text("redis://:from-file@127.0.0.1:6379/0")
    monkeypatch.setenv("CUTOUT_REDIS_URL", "redis://:from-env@127.0.0.1:6379/0")
    assert load_settings().redis_url == "redis://:from-env@127.0.0.1:6379/0"


def test_a_secrets_dir_that_is_not_a_folder_stops_start_up_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUTOUT_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="CUTOUT_SECRETS_DIR"):
        load_settings()


def test_settings_shown_or_logged_never_carry_the_redis_password(secrets_folder: Path) -> None:
    (secrets_folder / "cutout_redis_url").write_text(f"rediss://{ACL_USER}:{ACL_PASSWORD}@10.0.0.5:6380/0")
    settings = load_settings()
    shown = [repr(settings), str(settings), f"{settings!r}", json.dumps(settings.redacted())]
    assert all(ACL_PASSWORD not in text for text in shown)
    assert settings.redacted()["redis_url"] == f"rediss://{ACL_USER}:****@10.0.0.5:6380/0"


def test_a_rejected_redis_url_is_not_echoed_in_the_error(secrets_folder: Path) -> None:
    (secrets_folder / "cutout_redis_url").write_text(f"https://{ACL_USER}:{ACL_PASSWORD}@10.0.0.5/")
    with pytest.raises(ConfigError, match="CUTOUT_REDIS_URL") as info:
        load_settings()
    assert ACL_PASSWORD not in str(info.value) and ACL_PASSWORD not in str(info.value.__cause__)


def test_certificates_with_a_plain_redis_url_are_refused(certs: CertFiles) -> None:
    with pytest.raises(ConfigError, match="rediss://"):
        tls_settings("redis://127.0.0.1:6379/0", certs.ca_file)


# -- S3 over TLS --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_s3_endpoint(
    aws_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, certs: CertFiles
) -> Iterator[str]:
    """moto_server over HTTPS with the test CA's server certificate, on loopback."""
    port = free_port()
    url = f"https://{CERT_HOST}:{port}"
    log = tmp_path_factory.mktemp("moto-tls") / "moto.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "moto.server", "-H", CERT_HOST, "-p", str(port)),
                *("-c", str(certs.server_cert), "-k", str(certs.server_key)),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc, "moto_server", log)
        context = ssl.create_default_context(cafile=str(certs.ca_file))
        urllib.request.urlopen(url + "/moto-api/", timeout=10, context=context).close()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def s3_settings(endpoint: str, ca_bundle: Path | None) -> S3Settings:
    # One attempt: a refused certificate is not worth botocore's retries here.
    return S3Settings(endpoint_url=endpoint, ca_bundle=ca_bundle, addressing_style="path", max_attempts=1)


def test_s3_over_tls_verifies_the_endpoint_against_the_ca_bundle(
    tls_s3_endpoint: str, certs: CertFiles
) -> None:
    from cutout_fleet.storage import s3_client

    client = s3_client(s3_settings(tls_s3_endpoint, certs.ca_file))
    client.create_bucket(Bucket="tls-bucket")
    client.put_object(Bucket="tls-bucket", Key="k", Body=b"over tls")
    assert client.get_object(Bucket="tls-bucket", Key="k")["Body"].read() == b"over tls"


def test_s3_refuses_an_endpoint_signed_by_another_ca(tls_s3_endpoint: str, other_ca: CertFiles) -> None:
    from cutout_fleet.storage import s3_client

    client = s3_client(s3_settings(tls_s3_endpoint, other_ca.ca_file))
    with pytest.raises(botocore.exceptions.SSLError):
        client.list_buckets()


def test_s3_without_a_ca_bundle_does_not_trust_a_private_ca(tls_s3_endpoint: str) -> None:
    from cutout_fleet.storage import s3_client

    client = s3_client(s3_settings(tls_s3_endpoint, None))
    with pytest.raises(botocore.exceptions.SSLError):
        client.list_buckets()
