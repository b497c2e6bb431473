//! Benchmarks, each one command that prints its figure as the last line.

pub mod accounts;
pub mod http;
pub mod payins;
pub mod settle;
