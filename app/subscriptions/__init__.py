"""Subscriptions: R4 criteria matching at every write, the transactional outbox, delivery with retry
(hl7.org/fhir/R4/subscription.html)."""
