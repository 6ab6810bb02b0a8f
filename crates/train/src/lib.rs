//! lantern-train
