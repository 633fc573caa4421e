"""FHIR search: index extraction at write time and query evaluation."""
