//! node-config (in progress)
