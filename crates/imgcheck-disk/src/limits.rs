//! Caps on every size or count read from an image, in one place.
//!
//! Each value follows qemu's own limit where qemu has one, so any image qemu
//! opens, we open; a header that claims more is refused *before* anything is
//! allocated or read.

/// Limits applied while opening and reading images.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest virtual disk size accepted (qemu's qcow2 limit is 2^61;
    /// 64 PiB is far beyond any cloud image and keeps arithmetic safe).
    pub max_virtual_size: u64,
    /// Largest in-memory table (qcow2 L1, VHDX BAT, VDI block map, VMDK grain
    /// directory), in bytes. qemu caps the qcow2 L1 at 32 MiB.
    pub max_table_bytes: u64,
    /// Largest single metadata structure read whole (headers, descriptors).
    pub max_metadata_bytes: u64,
    /// How many L2 tables / grain tables the cache keeps.
    pub table_cache_entries: usize,
    /// Largest text descriptor (VMDK); imago uses 2 MiB, qemu reads at most
    /// 1 MiB of an embedded one.
    pub max_descriptor_bytes: u64,
    /// Most extents a VMDK descriptor may list.
    pub max_extents: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_virtual_size: 1 << 56,
            max_table_bytes: 32 << 20,
            max_metadata_bytes: 8 << 20,
            table_cache_entries: 64,
            max_descriptor_bytes: 1 << 20,
            max_extents: 4096,
        }
    }
}
