//! The model, embedded by `build/main.rs` from `FIRMWARE_MODEL`.

/// Forces 4-byte alignment on the embedded bytes.
#[repr(C, align(4))]
struct Aligned<Bytes: ?Sized>(Bytes);

static ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.bin")));

/// The model file's bytes, 4-byte aligned, in flash.
pub static MODEL: &[u8] = &ALIGNED.0;
