// OpenBLAS's CBLAS interface. pkg-config (openblas.pc) puts the active variant's include dir
// (e.g. /usr/include/x86_64-linux-gnu/openblas-pthread/) first, so this is OpenBLAS's cblas.h
// with the openblas_* threading functions, even if another BLAS owns the plain cblas.h alternative.
#include <cblas.h>

// Spin-wait hint for ReflowEngine's ComputePool (Parallel.swift). Swift has no spelling for the
// x86 PAUSE instruction: it lowers the power of a spinning thread and frees execution resources
// for a hyperthread sibling (a vCPU's host sibling may be running the thread we wait for).
static inline void reflowd_spin_hint(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

// glibc allocator tuning for ReflowEngine's Memory.keepFreedBuffers() (Swift's Glibc module does
// not export malloc.h). Returns 1 when both settings were accepted.
#include <malloc.h>
static inline int reflowd_keep_freed_buffers(int mmap_threshold, int trim_threshold) {
#if defined(__GLIBC__)
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1;
#else
    return 0;
#endif
}
