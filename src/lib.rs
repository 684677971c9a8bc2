//! lightpath: a live-video CDN relay and acceleration overlay.
//!
//! Live streams pushed by publishers into origin nodes travel hop by hop over a QUIC mesh, along the
//! lowest-latency paths, to edge nodes that serve viewers. The crate is laid out as the data path
//! (`origin` -> `mesh` + `cache` -> `edge`), the control path (`routing`, and later `control`), and the pure
//! core that both the live node and the simulator drive (`routing`, `wire`, `hls`): no sockets, no clock,
//! no tokio there. `quic` (transport settings, frames, dialing) and `netem` (WAN emulation on a UDP socket)
//! are plumbing that the mesh and the control plane share without importing each other.
// `deny`, not `forbid`: `cache::sealed` and `prefetch` alone may use unsafe code, and their module docs say why.
#![deny(unsafe_code)]

pub mod ca;
pub mod cache;
pub mod clock;
pub mod config;
pub mod control;
pub mod demo;
pub mod director;
pub mod edge;
pub mod hls;
pub mod http;
pub mod id;
pub mod listen;
pub mod mesh;
pub mod netem;
pub mod node;
pub mod origin;
pub mod prefetch;
pub mod quic;
pub mod relay;
pub mod routing;
pub mod sim;
pub mod steering;
pub mod takedowns;
pub mod telemetry;
pub mod topology;
pub mod wire;
