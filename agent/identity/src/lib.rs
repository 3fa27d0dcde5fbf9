//! weir-identity (in progress)
