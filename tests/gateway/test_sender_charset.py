"""A registered sender's default charset (issue #19): set by the CLI, used by the ingest before the settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common import Hl7Settings
from fhir_store import JOURNAL_PROCESSED
from gateway.cli import main as cli
from gateway.ingest import Ingestor
from gateway.runtime import Runtime
from gateway.sender_registry import SenderRegistry
from tests.console.test_messages import LATIN1
from tests.support.settings import open_settings


@pytest.fixture
def runtime(database_url: str) -> Iterator[Runtime]:
    rt = Runtime.create(open_settings(database_url=database_url), migrate=False)
    yield rt
    rt.close()


def test_cli_sets_the_charset_and_the_ingest_uses_it_before_the_settings(
    runtime: Runtime, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--database-url", database_url]
    sender = ["--application", "HIS_OLD", "--facility", "PK_CU"]
    assert cli(["senders", "add", *url, *sender, "--network", "127.0.0.1", "--charset", "8859/1"]) == 0
    assert capsys.readouterr().out.strip().endswith("\tcharset=iso8859-1")  # HL7 table 0211 label accepted
    assert cli(["senders", "set-charset", *url, *sender, "--charset", "no-such"]) == 2
    assert "unknown character set" in capsys.readouterr().err
    assert cli(["senders", "set-charset", *url, *sender, "--charset", ""]) == 0  # cleared
    assert SenderRegistry(runtime.engine).get("HIS_OLD", "PK_CU").charset is None  # type: ignore[union-attr]
    ingestor = Ingestor(runtime.store, runtime.settings)
    refused = ingestor.handle(LATIN1, peer="127.0.0.1:1")
    assert refused.status != JOURNAL_PROCESSED and "utf-8" in (refused.error or "")
    assert cli(["senders", "set-charset", *url, *sender, "--charset", "cp1258"]) == 0
    assert (
        cli(["senders", "set-charset", *url, "--application", "X", "--facility", "Y", "--charset", "cp1258"])
        == 1
    )
    fresh = Ingestor(runtime.store, runtime.settings)  # a new directory: no wait for the refresh
    assert fresh.default_charset("HIS_OLD", "PK_CU") == "cp1258"
    assert fresh.default_charset("OTHER", "X") == runtime.settings.hl7.default_charset
    mapped = open_settings(
        database_url=database_url, hl7=Hl7Settings(sender_charsets="HIS_OLD^PK_CU=ascii,X=latin-1")
    )
    assert Ingestor(runtime.store, mapped).default_charset("HIS_OLD", "PK_CU") == "cp1258"  # registry first
    assert Ingestor(runtime.store, mapped).default_charset("X", "Y") == "latin-1"  # then the settings map
    outcome = fresh.replay(refused.journal_id)  # type: ignore[arg-type]
    assert outcome.status == JOURNAL_PROCESSED and outcome.ack_code == "AA"
