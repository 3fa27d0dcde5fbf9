//! weir-policy (in progress)
