"""HTTP and AWS clients built on shared, read-only parts.

Building an httpx client loads the CA bundle into a new TLS context (~18 ms of CPU each), and a
boto3 client on a new session parses botocore's endpoint and service JSON again (~80 ms).
restorekit builds many short-lived clients (a health check per call, an S3 client per
repository, a provider client per run), so both parts are built once per process and shared:
a configured ``ssl.SSLContext`` and botocore's data loader are safe to share between threads.
The answers are the same as without sharing: the TLS context follows httpx's own rules for
``verify=True``, the loader botocore's for ``AWS_DATA_PATH``.
"""

from __future__ import annotations

import functools
import os
import ssl
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import boto3
    import httpx


@functools.lru_cache(maxsize=8)
def _tls_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile, capath=capath)


def tls_context(*, trust_env: bool = True) -> ssl.SSLContext:
    """The context httpx builds for ``verify=True``: ``SSL_CERT_FILE``, else ``SSL_CERT_DIR``
    (when ``trust_env``), else certifi's bundle; one per distinct answer."""
    if trust_env and os.environ.get("SSL_CERT_FILE"):
        return _tls_context(os.environ["SSL_CERT_FILE"], None)
    if trust_env and os.environ.get("SSL_CERT_DIR"):
        return _tls_context(None, os.environ["SSL_CERT_DIR"])
    import certifi

    return _tls_context(certifi.where(), None)


def http_client(**options: Any) -> httpx.Client:
    """``httpx.Client(**options)`` verifying TLS with the shared :func:`tls_context`."""
    import httpx

    options.setdefault("verify", tls_context(trust_env=options.get("trust_env", True)))
    return httpx.Client(**options)


@functools.lru_cache(maxsize=4)
def _data_loader(search_path: str | None) -> Any:
    import botocore.loaders

    return botocore.loaders.create_loader(search_path)


def botocore_session() -> Any:
    """A new botocore session (sessions are not thread-safe: one per user, as before) that
    reads service models through the process's shared loader."""
    import botocore.session

    core = botocore.session.get_session()
    core.register_component("data_loader", _data_loader(core.get_config_variable("data_path")))
    return core


def boto3_session(core: Any = None, **options: Any) -> boto3.session.Session:
    """``boto3.session.Session(**options)`` over ``core``, by default a new
    :func:`botocore_session`."""
    import boto3

    return boto3.session.Session(botocore_session=core or botocore_session(), **options)
