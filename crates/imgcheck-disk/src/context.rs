//! What a format's `open` function gets.
//!
//! Kept apart from [`open`](crate::open) so that the formats depend on this
//! small module and the opener depends on the formats, never both ways.

use std::sync::Arc;

use imgcheck_source::ByteSource;

use crate::deps::DependencyPolicy;
use crate::limits::Limits;

/// The image file and the rules for reading it.
#[derive(Debug)]
pub struct OpenContext<'a> {
    /// The image file.
    pub source: Arc<dyn ByteSource>,
    /// Caps.
    pub limits: &'a Limits,
    /// Which referenced files may be opened.
    pub dependencies: DependencyPolicy,
}

impl OpenContext<'_> {
    /// The image's name, for errors.
    pub fn name(&self) -> &str {
        self.source.name()
    }
}
