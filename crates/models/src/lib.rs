//! lantern-models
