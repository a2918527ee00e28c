//! fd-analysis
