"""HTTP adapter: the FHIR R4 REST facade (``/fhir``), health and metrics endpoints.

Everything here translates HTTP to calls on :class:`fhir_store.repository.FhirStore`
and back; no FHIR semantics live here that the HL7 path would not share
(https://hl7.org/fhir/R4/http.html).
"""
