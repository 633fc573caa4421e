"""Care plan repository: a FHIR R4 server for care coordination."""

__version__ = "0.1.0"
