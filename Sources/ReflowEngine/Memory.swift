internal import COpenBLAS

/// Process-wide allocator settings.
public enum Memory {
    /// Keeps freed blocks of up to 32 MiB in the heap instead of returning them to the kernel.
    /// With glibc's defaults (a dynamic mmap threshold, a 128 KiB trim threshold) the activation
    /// buffers of every ODE step were unmapped and faulted in again: 13 % of a U-Net sampling
    /// profile was `clear_page` under `memset`. 32 MiB is glibc's largest mmap threshold on
    /// 64-bit. Returns false when the C library refused (or is not glibc).
    @discardableResult
    public static func keepFreedBuffers() -> Bool {
        reflowd_keep_freed_buffers(32 << 20, 256 << 20) == 1
    }
}
