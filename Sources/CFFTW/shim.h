// FFTW 3, single precision (Debian: libfftw3-dev; libfftw3f). Used by ReflowEngine's FFT2D for
// the MRI forward model (issue #14). Plans are made with FFTW_ESTIMATE under a lock (planning is
// not thread-safe) and executed with the new-array functions, which are.
#include <fftw3.h>
