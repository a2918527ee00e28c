"""The manifest schema version this package writes. crates/fd-model/src/manifest/mod.rs reads the same
number (`SCHEMA_VERSION`, which also reads version 1: no `prepare`, `family`, `vae.dtype`); experiments/tests/test_export.py fails when the two disagree."""

SCHEMA_VERSION = 2


def deepcache_graph(key: str, part: str) -> str:
    """Name of a DeepCache graph (crates/fd-model/src/manifest/deepcache.rs `deepcache_graph`): `deepcache{b}_{part}`
    for fd's earlier block-level key b, `deepcache_{key}_{part}` otherwise (key `id{N}`: DeepCache's
    own cache_branch_id N)."""
    return f"{deepcache_prefix(key)}_{part}"


def deepcache_prefix(key: str) -> str:
    """The graph-name prefix of DeepCache entry `key` (see deepcache_graph)."""
    return f"deepcache{key}" if key.isdigit() else f"deepcache_{key}"
