//! The dzero program as a library: the server's start-up (`serve`), the benchmarks and a small
//! HTTP client, so that integration tests drive exactly what the binary runs.

pub mod bench;
pub mod calendars;
pub mod client;
pub mod payouts;
pub mod secrets;
pub mod server;
