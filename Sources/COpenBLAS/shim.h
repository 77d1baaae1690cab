// OpenBLAS's CBLAS interface. pkg-config (openblas.pc) puts the active variant's include dir
// (e.g. /usr/include/x86_64-linux-gnu/openblas-pthread/) first, so this is OpenBLAS's cblas.h
// with the openblas_* threading functions, even if another BLAS owns the plain cblas.h alternative.
#include <cblas.h>
