//! Guest inspection for imgcheck: partition tables, filesystems, and facts read from the root filesystem
