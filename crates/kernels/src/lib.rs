//! lantern-kernels
