"""Canonical Avro schemas (``canonical/*.avsc``), the schema-registry client and the embedded registry."""
