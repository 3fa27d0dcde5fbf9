//! weir-observer (in progress)
