"""Shared client parts: one TLS context and one botocore loader per process, with the same
answers as unshared ones."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi
import httpx
import pytest

from restorekit.clients import boto3_session, botocore_session, http_client, tls_context


def test_the_tls_context_is_built_once_and_verifies_like_httpx(monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    ctx = tls_context()
    assert ctx is tls_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    expected = ssl.create_default_context(cafile=certifi.where())
    assert ctx.cert_store_stats() == expected.cert_store_stats()


def test_ssl_cert_file_is_honoured_unless_the_environment_is_not_trusted(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    default = tls_context(trust_env=False)
    # A bundle of one certificate, so the stores differ visibly from certifi's.
    with open(certifi.where()) as bundle:
        first = bundle.read().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    one = tmp_path / "one.pem"
    one.write_text(first)
    monkeypatch.setenv("SSL_CERT_FILE", str(one))
    assert tls_context().cert_store_stats()["x509_ca"] == 1
    assert tls_context(trust_env=False) is default


def test_http_client_uses_the_shared_context_and_keeps_an_explicit_verify() -> None:
    with http_client(timeout=1) as client:
        assert isinstance(client, httpx.Client)
    with http_client(verify=False, timeout=1) as client:
        assert isinstance(client, httpx.Client)


def test_boto3_sessions_are_separate_but_share_the_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    one, two = botocore_session(), botocore_session()
    assert one is not two
    assert one.get_component("data_loader") is two.get_component("data_loader")
    client = boto3_session(region_name="eu-west-1").client("s3")
    assert client.meta.region_name == "eu-west-1"
    assert client.meta.service_model.service_name == "s3"
