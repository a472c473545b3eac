"""carebridge: fhir_store package."""
