"""The manifest schema version this package writes. crates/fd-model/src/manifest.rs reads the same
number (`SCHEMA_VERSION`, which also reads version 1: no `prepare`, `family`, `vae.dtype`); experiments/tests/test_export.py fails when the two disagree."""

SCHEMA_VERSION = 2
