//! Integration tests for imapgate: real private Dovecot instances and the real
//! imapgate binary on 127.0.0.1 (STYLE.md §4.13). Every test builds its own
//! temp dir, Dovecot, proxy and clients, so tests run in parallel threads.

mod common;

mod auth;
mod backends;
mod clients;
mod compress;
mod config;
mod daemon;
mod inetd;
mod limits;
mod login;
mod lookups;
mod metadata;
mod metrics;
mod relay;
mod routing;
mod rules;
mod rules_bypass;
mod scale_out;
mod smuggling;
mod smuggling_generated;
mod tls;
