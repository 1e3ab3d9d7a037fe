//! Quality-of-service classes (in progress).
