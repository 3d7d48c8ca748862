//! What a reload changes.
