"""The milvus backend against a real Milvus standalone server (2.3.5, the binary the registry's
`milvus` package bundles), started with authentication on by the test: the `http://` path, a
wrong token, and a catalog with missing values on a server too old to store them."""

from __future__ import annotations

import secrets

import pytest

from config.schema import MilvusConfig
from index_store.milvus_client import MilvusError, listening
from index_store.milvus_store import MilvusStore, current_version, publish
from tests.test_milvus import FINGERPRINT, N, build, catalog, free_port

TOKEN_ENV = "VSEARCH_TEST_MILVUS_TOKEN"


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory):
    """(uri, token): Milvus standalone with authentication on, its root password changed from
    the well-known default to a random one before any test uses it (Milvus 2.3 has no setting
    for the address its ports listen on, so the password is what keeps others out)."""
    milvus = pytest.importorskip("milvus", reason="the test requirements install milvus==2.3.5")
    from pymilvus import MilvusClient

    server = milvus.MilvusServer()
    server.config.set("authorization_enabled", True)
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus-standalone")))
    server.config.update(proxy_port=free_port())
    server.start()
    try:
        uri = f"http://127.0.0.1:{server.listen_port}"
        password = secrets.token_urlsafe(16)
        admin = MilvusClient(uri=uri, token="root:Milvus")
        admin.update_password("root", "Milvus", password)
        admin.close()
        yield uri, f"root:{password}"
    finally:
        server.stop()


def settings_for(uri: str, **changes) -> MilvusConfig:
    return MilvusConfig(**{"uri": uri, "token_env": TOKEN_ENV, "collection_prefix": "standalone",
                           "consistency_level": "Strong", **changes})


def test_a_server_with_a_token_builds_publishes_and_serves(milvus_server, monkeypatch):
    uri, token = milvus_server
    monkeypatch.setenv(TOKEN_ENV, token)
    settings = settings_for(uri)
    store, (vectors, _) = build(settings, complete=True), catalog(complete=True)
    version = publish(store, settings)
    served = MilvusStore.open(settings, FINGERPRINT)
    assert served.version == version and served.size == N
    assert served.search(vectors[7], 5)["id"].tolist() == store.search(vectors[7], 5)["id"].tolist()
    tricky = "x' or 1==1 or '"
    found = served.search(vectors[7], 5, filters={"colour": [tricky]})
    assert len(found) == 5 and found["colour"].eq(tricky).all()


def test_a_wrong_token_names_the_token_variable(milvus_server, monkeypatch):
    uri, token = milvus_server
    monkeypatch.setenv(TOKEN_ENV, token + "-wrong")
    assert listening(uri)
    with pytest.raises(MilvusError, match=rf"milvus\.token_env \(\${TOKEN_ENV}\): .* is reachable "
                                          "but refused the connection"):
        current_version(settings_for(uri))


def test_missing_values_on_a_server_without_nullable_fields_name_the_column(milvus_server,
                                                                           monkeypatch):
    uri, token = milvus_server
    monkeypatch.setenv(TOKEN_ENV, token)
    with pytest.raises(MilvusError, match=r"cannot store missing values .* item column 'size' "
                                          r"has 100 missing"):
        build(settings_for(uri, collection_prefix="incomplete"))


def test_nothing_listens_on_a_free_port():
    assert not listening(f"http://127.0.0.1:{free_port()}")
