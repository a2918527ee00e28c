"""The manifest schema version this package writes. crates/fd-model/src/manifest.rs reads the same
number (`SCHEMA_VERSION`); experiments/tests/test_export.py fails when the two disagree."""

SCHEMA_VERSION = 1
