//! End-to-end tests: the five services started in-process on ephemeral ports,
//! driven only through their generated gRPC clients, as a user's own services
//! would drive them.

#![allow(clippy::unwrap_used)]

mod bad_input;
mod bounds;
mod calibration;
mod chain;
mod concurrency;
mod dashboard;
mod dead_letters;
mod definitions;
mod durability;
mod flows;
mod freshness;
mod fuzz;
mod idempotency;
mod ingest;
mod interfaces;
mod jwt;
mod never_buy;
mod overload;
mod owners;
mod planning;
mod postgres;
mod privacy;
mod recycling;
mod retention;
mod roles;
mod targets;
mod tls;
mod velocity;
mod views;
mod zones;
