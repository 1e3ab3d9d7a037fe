//! The default `node_core::Runtime` on CRI (in progress).

pub mod container;
pub mod labels;
pub mod sandbox;
