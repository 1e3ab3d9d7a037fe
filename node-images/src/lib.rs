#![forbid(unsafe_code)]
//! node-images (in progress)

pub use oci_spec;

pub mod oci;
