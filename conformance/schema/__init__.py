"""Schemas of an endpoint, derived from its ``query-qmp-schema`` reply.

* :mod:`conformance.schema.jsonschema`: introspection → JSON Schema (draft 2020-12);
* :mod:`conformance.schema.strategies`: that JSON Schema → hypothesis strategies, steerable;
* :mod:`conformance.schema.messages`: record what an endpoint was sent and answered, and check
  it against the derived schemas.
"""
