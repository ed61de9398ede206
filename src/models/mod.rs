//! Model families. One folder per family; shared building blocks in [`nn`].

pub mod linear;
pub mod matvec;
pub mod nn;
pub mod smolvlm;
