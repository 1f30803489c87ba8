//! Caps on every size or count read from an image, in one place.
//!
//! Each value follows qemu's own limit where qemu has one, so any image qemu
//! opens, we open; a header that claims more is refused *before* anything is
//! allocated or read. [`Limits`] holds the tunables (a caller may lower
//! them); the constants below are format rules (a header beyond them breaks
//! its specification, so it is corrupt, not merely too large). Provider
//! size limits are not here: they belong to imgcheck-rules.

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

// Caps that are format rules rather than tunables: a header beyond them is
// refused whatever `Limits` says. Each says whose limit it is.

/// qemu's `QCOW_MAX_REFTABLE_SIZE`: the qcow2 refcount table is at most
/// 8 MiB.
pub const QCOW2_MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// qemu's `QCOW_MAX_SNAPSHOTS`.
pub const QCOW2_MAX_SNAPSHOTS: u64 = 65536;
/// qemu: a qcow2 backing file name is at most 1023 bytes.
pub const QCOW2_MAX_BACKING_NAME: u64 = 1023;
/// How much of qcow2 cluster 0 is read in one go; qemu's headers,
/// extensions and backing name fit in a few hundred bytes, so more is read
/// only if a (hostile or unusual) header points further.
pub const QCOW2_PREFIX: u64 = 64 << 10;
/// MS-VHDX 2.6.2.2: the largest virtual disk is 64 TB. Larger is corrupt;
/// `Limits::max_virtual_size` (64 PiB by default) can only lower this.
pub const VHDX_MAX_VIRTUAL_SIZE: u64 = 64 << 40;
/// MS-VHDX 2.6.2.1: block size is a power of two from 1 MiB to 256 MiB.
pub const VHDX_MIN_BLOCK: u64 = 1 << 20;
/// See [`VHDX_MIN_BLOCK`].
pub const VHDX_MAX_BLOCK: u64 = 256 << 20;
/// MS-VHDX 2.2.1, 2.6.1: at most 2047 region or metadata table entries.
pub const VHDX_MAX_TABLE_ENTRIES: u32 = 2047;
/// Largest VDI block accepted (qemu writes 1 MiB; 256 MiB matches the
/// largest VHDX block and keeps per-block arithmetic small).
pub const VDI_MAX_BLOCK: u64 = 256 << 20;
