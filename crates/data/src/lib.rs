//! lantern-data
