//! Pod sources and their merge (in progress).
