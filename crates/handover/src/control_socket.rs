//! The control socket protocol (being written).
