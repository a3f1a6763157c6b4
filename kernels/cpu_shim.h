// CPU shim: lets kernels/*.cu compile with a plain C++ compiler (g++ -x c++ -include cpu_shim.h).
// The CUDA qualifiers become nothing, and OCCLUTRACE_CPU_SHIM tells a kernel file to emit its
// extern "C" loop over queries instead of its __global__ launch wrappers. Tests use this to run the
// same search code as the GPU against brute force on every CI machine, GPU or not.
#pragma once
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define __host__
#define __device__
#define __global__
#define __forceinline__ inline
#define OCCLUTRACE_CPU_SHIM 1
