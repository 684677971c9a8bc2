//! User-space WAN emulation on a UDP socket: per-link delay, jitter, loss, bandwidth caps and partitions.
//!
//! The kernel's netem is not available where lightpath's tests and demo run, so each endpoint impairs its own
//! EGRESS traffic: [`impaired_socket`] wraps a UDP socket for quinn, and every datagram sent to an
//! address that has an [`Impairment`] in the socket's [`Impairments`] table is dropped, delayed or queued
//! behind a bandwidth cap before it reaches the real socket. The table can be changed at any time from any
//! thread; a change applies to the packets sent after it.
//!
//! What it does not do: it never touches the receive path, so a link configured on both ends with a delay
//! of `d` has a round-trip time of `2d`, and a partition configured on one end only is one-way. It models
//! one FIFO bottleneck per link, not a path through several routers, and never reorders, duplicates or
//! corrupts packets.
//!
//! How it works: `try_send` (synchronous, non-blocking) looks the destination up. An address without an
//! impairment, or with a perfect one, goes straight to the inner socket, GSO batch and all. Otherwise the
//! batch is split into its datagrams, each one is dropped or given a due time, and queued datagrams are
//! copied into one socket-wide queue ordered by due time. A single background task per socket sleeps until
//! the earliest due time and sends what is due; no task is spawned per packet. Memory is bounded: a
//! rate-capped link holds at most [`QUEUE_TIME`] worth of backlog (tail drop beyond), and the bytes waiting
//! per link and per socket are capped ([`LINK_BACKLOG_MAX`], [`SOCKET_BACKLOG_MAX`]).
//!
//! The background task sleeps on tokio's timer, which has millisecond resolution: delays are accurate to
//! about a millisecond, and a rate-capped link sends in small bursts up to a millisecond apart whose average
//! is the configured rate.
//!
//! It is a socket layer, not mesh logic: a mesh node's endpoint runs on it when links are emulated or the
//! admin API may change them, and benchmarks put raw quinn endpoints on it. The rooms: [`Impairment`] (one
//! link's settings, checked for configuration input), [`Impairments`] (the table of a socket's links),
//! `scheduler` (pure: each datagram's fate and due time, `now` passed in) and `socket` (the quinn socket
//! wrapper and its one scheduling task).

mod impairment;
mod scheduler;
mod socket;
mod table;
#[cfg(test)]
mod tests;

pub use impairment::{ImpairError, Impairment, MAX_DELAY_MS, QUEUE_TIME};
pub use scheduler::{LINK_BACKLOG_MAX, SOCKET_BACKLOG_MAX};
pub use socket::impaired_socket;
pub use table::Impairments;
