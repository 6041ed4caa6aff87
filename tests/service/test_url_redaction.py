"""No password in a URL the service shows, wherever the URL holds it: the userinfo (SQLAlchemy's
reading of it: `/`, `?`, `#` and `@` inside), the query (any secret-named parameter: libpq's
password and sslpassword, tokens, keys, a presigned URL's signature), the fragment, or a libpq
keyword DSN; the rest of the URL as it was (a sqlite URL's four slashes too). And each place a
URL is shown passes through it: a search sweep's study.storage, /readyz, the worker's exit."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from service.contract.documents import sweep_document
from service.contract.search_space import study_storage
from service.contract.urls import redact_url, redact_urls

SECRET = "s3cr3t"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u@h/db?password=s3cr3t", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u:s3cr3t@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgresql+psycopg://u@h/db?sslmode=require&password=s3cr3t&application_name=a",
         "postgresql+psycopg://u@h/db?sslmode=require&application_name=a"),
        ("postgresql://u@h/db?PASSWORD=s3cr3t", "postgresql://u@h/db"),
        ("postgresql://u@h/db?pass%77ord=s3cr3t", "postgresql://u@h/db"),  # names read decoded
        ("postgresql://u@h/db?sslpassword=s3cr3t;pwd=s3cr3t", "postgresql://u@h/db"),
        ("postgresql://u:s3/cr3t@h/db", "postgresql://u@h/db"),  # as SQLAlchemy reads it
        ("postgresql://u:s3cr?3t@h/db", "postgresql://u@h/db"),
        ("postgresql://u:s3@cr3t@h/db", "postgresql://u@h/db"),  # an unencoded @ in it
        ("redis://:s3cr3t@h:6379/0", "redis://h:6379/0"),
        ("redis://h:6379/0?password=s3cr3t", "redis://h:6379/0"),
        ("https://b.s3.amazonaws.com/k.csv?X-Amz-Signature=s3cr3t&X-Amz-Credential=s3cr3t&v=1",
         "https://b.s3.amazonaws.com/k.csv?v=1"),
        ("https://h/cb?access_token=s3cr3t&api_key=s3cr3t#token=s3cr3t", "https://h/cb"),
        ("https://h/cb#access_token=s3cr3t&state=1", "https://h/cb#state=1"),
        ("host=h password='s3 cr3t' dbname=d", "host=h dbname=d"),
        ("host=h password=s3cr3t dbname=d", "host=h dbname=d"),
        # nothing to take out: left as it was
        ("sqlite:////tmp/x/regtrain.db", "sqlite:////tmp/x/regtrain.db"),
        ("sqlite:///rel.db", "sqlite:///rel.db"),
        ("postgresql+psycopg://postgres@127.0.0.1:5432/db", "postgresql+psycopg://postgres@127.0.0.1:5432/db"),
        ("https://host/users/@me", "https://host/users/@me"),
        ("https://host:8080/p/@me?q=1", "https://host:8080/p/@me?q=1"),
    ],
)  # fmt: skip
def test_every_form_of_a_password_is_removed(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert SECRET not in redact_url(url) and "s3 cr3t" not in redact_url(url)


def test_what_remains_is_the_url_sqlalchemy_reads_without_its_password() -> None:
    for url in ("postgresql+psycopg://u:s3@cr3t@h:5/db?sslmode=require&password=x",
                "postgresql+psycopg://u@h:5/db?password=s3cr3t&sslmode=require"):  # fmt: skip
        bare = sa.make_url(redact_url(url))
        assert (bare.username, bare.password, bare.host, bare.port, bare.database) == (
            "u",
            None,
            "h",
            5,
            "db",
        )
        assert dict(bare.query) == {"sslmode": "require"}


def test_urls_inside_text_are_redacted_and_the_sentence_kept() -> None:
    text = "cannot connect to redis://:s3cr3t@h:6379/0, nor (postgresql://u@h/db?password=s3cr3t)."
    assert redact_urls(text) == "cannot connect to redis://h:6379/0, nor (postgresql://u@h/db)."


def _sweep_row(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "sw-1", "name": None, "status": "running", "created_at": None, "started_at": None,
        "finished_at": None, "attempts": 1, "cancel_requested": False, "best_index": None,
        "best_job_id": None, "lease_owner": None, "warnings": None, "error": None,
        "spec": {"space": {"regularization.l2": {"log_uniform": [1e-6, 0.1]}}},
    }  # fmt: skip
    return row | over


@pytest.mark.parametrize(
    "store_url",
    ["postgresql+psycopg://regtrain@db.internal/regtrain?password=s3cr3t",
     "postgresql+psycopg://regtrain:s3cr3t@db.internal/regtrain"],
)  # fmt: skip
def test_a_search_sweeps_study_storage_shows_no_password(store_url: str) -> None:
    """Every tenant reads study.storage: the URL's user, host and database, no password."""
    doc = sweep_document(_sweep_row(), [], None, store_url)
    assert doc["study"]["storage"] == "postgresql+psycopg://regtrain@db.internal/regtrain"
    assert study_storage(store_url) == doc["study"]["storage"]
    assert SECRET not in str(doc)


def test_readyz_shows_no_password_of_an_unreachable_broker(make_client: Any) -> None:
    """/readyz answers without a key: its reasons are redacted as any document is."""
    client = make_client(broker_url="redis://:s3cr3t@127.0.0.1:1/0")  # nothing listens on port 1
    r = client.get("/readyz")
    assert r.status_code == 503, r.text
    assert r.json()["checks"]["broker"].startswith("unreachable") and SECRET not in r.text


def test_a_registered_datasets_document_shows_its_uri_without_a_password(client: Any) -> None:
    """The row keeps what the worker fetches; the document the tenant reads shows no secret."""
    store = client.app.state.store
    uri = "https://u:s3cr3t@data.example/d.csv?X-Amz-Signature=s3cr3t&v=2"
    store.create_dataset(
        dataset_id="ds-uri", tenant="default", name="d", task="classification", n_samples=10,
        n_features=2, n_classes=2, sha256="0" * 64, size_bytes=10, uri=uri,
    )  # fmt: skip
    for doc in (client.get("/v1/datasets/ds-uri").json(), client.get("/v1/datasets").json()["datasets"][0]):
        assert doc["uri"] == "https://u@data.example/d.csv?v=2" and SECRET not in str(doc)
    assert store.get_dataset("ds-uri")["uri"] == uri
