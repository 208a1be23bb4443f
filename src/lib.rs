//! carve: one binary that carves a libvirt host into virtual private servers and sells them
//! through a REST API, a web panel and an SFTP server.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod db;
pub mod domain;
pub mod error;
pub mod feed;
pub mod http_server;
pub mod hypervisor;
pub mod lb;
pub mod metrics;
pub mod pools;
pub mod provision;
pub mod quota;
pub mod request;
pub mod scaling;
pub mod sftp;
pub mod telemetry;
pub mod tenancy;
pub mod view_cache;
pub mod web;
