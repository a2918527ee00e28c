//! fd-sched
