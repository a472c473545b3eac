"""Property: any generated ADT^A04 that gets AA is stored as resources that validate (fhir.resources R4B).

The ingest path does not re-validate mapper output by default (see gateway/ingest.py), so this
end-to-end property is what shows that an AA never stores an invalid resource.
"""

from __future__ import annotations

import datetime as dt
import itertools
import tempfile
from collections.abc import Iterator

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import AuditSettings
from fhir_store.search import parse_query
from gateway.ingest import Ingestor
from gateway.runtime import Runtime
from tests.mappers.test_properties import cccds, dates, mobiles, names, phone_styles, record_numbers
from tests.support.settings import open_settings

_control = itertools.count(1)


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    folder = tempfile.mkdtemp(prefix="carebridge-prop-")
    rt = Runtime.create(
        open_settings(
            database_url=f"sqlite:///{folder}/p.db", audit=AuditSettings(key_file=f"{folder}/audit.pem")
        )
    )
    yield rt
    rt.close()


@given(names, dates, mobiles, phone_styles, record_numbers, cccds, st.sampled_from(["M", "F", "O", "U"]))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_aa_stores_valid_resources(
    runtime: Runtime,
    name: tuple[str, str, str],
    birth: dt.date,
    mobile: str,
    style: str,
    mrn: str,
    cccd: str,
    sex: str,
) -> None:
    family, middle, given_name = name
    phone = {
        "local": mobile,
        "intl": "+84" + mobile[1:],
        "spaced": f"+84 {mobile[1:4]} {mobile[4:7]} {mobile[7:]}",
    }[style]
    n = next(_control)
    message = "\r".join(
        [
            f"MSH|^~\\&|HIS|PROP|GW|CRM|20261120083000+0700||ADT^A04^ADT_A01|P{n}|P|2.5|||AL|NE|VNM|UNICODE UTF-8",
            "EVN|A04|20261120083000+0700",
            f"PID|1||{mrn}^^^PROP^MR~{cccd}^^^BCA^NI||{family}^{given_name}^{middle}^^^^L||"
            f"{birth:%Y%m%d}|{sex}|||||{phone}^PRN^CP",
            f"PV1|1|O|KHAM||||||||||||||||V{n}|||||||||||||||||||||||||20261120083000+0700",
        ]
    ).encode()
    outcome = Ingestor(runtime.store, runtime.settings).handle(message)
    assert outcome.ack_code in ("AA", "AE"), outcome.error  # AE only for a CCCD reused across records
    if outcome.ack_code != "AA":
        return  # refused messages store nothing; their ERR texts are covered elsewhere
    page = runtime.store.search(
        parse_query("Patient", [("identifier", f"https://id.carebridge.vn/mrn/PROP|{mrn}")])
    )
    assert len(page.matches) == 1
    stored = [page.matches[0].resource()]
    stored += [
        m.resource()
        for m in runtime.store.search(parse_query("Encounter", [("patient", page.matches[0].id)])).matches
    ]
    for resource in stored:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    assert stored[0]["name"][0]["family"] == family
