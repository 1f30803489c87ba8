//! Tests for the VHDX reader (filled in below).
