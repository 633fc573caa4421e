"""The SMART on FHIR authorization server: scopes, clients and users, signing keys, tokens, grants.

hl7.org/fhir/smart-app-launch (STU 2.x). HTTP lives in ``app.api`` (``auth``, ``smart_routes``,
``authorize_routes``); this package holds the decisions and the tables they read and write.
"""
