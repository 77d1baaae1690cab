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
