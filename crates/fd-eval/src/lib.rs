//! fd-eval
