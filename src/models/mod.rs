//! Model families. One folder per family; shared building blocks in [`nn`].

pub mod nn;
pub mod smolvlm;
