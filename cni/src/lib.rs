//! weir-cni (in progress)
