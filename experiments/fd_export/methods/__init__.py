"""The caching methods' Python side, one module each (mirroring crates/fd-sched/src/methods/): the
graphs a method adds to an export, its `add_*` helper for an existing export, its per-model fit
where it has one, and its reference implementation (transcribed from the official code) that the
parity tests compare fd with."""
