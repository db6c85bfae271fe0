"""The one error of the FHIR intake."""


class FhirIntakeError(RuntimeError):
    """The FHIR source could not be read at all (file missing, server unreachable)."""
