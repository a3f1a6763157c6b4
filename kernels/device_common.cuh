// Device helpers shared by the kernels of this folder (grid_knn.cu, point_mesh_distance.cu):
// overloads for float and double of the math they call, and the CPU build's thread setting.
//
// Every function is __host__ __device__, so it compiles for the GPU (NVRTC, nvcc) and, with
// kernels/cpu_shim.h, for the CPU. No #include here either: NVRTC compiles without the
// standard headers. The kernels include this file by a quoted name; at run time
// occlutrace_compute/nn/kernel_files.kernel_source pastes it in place of that line (NVRTC is
// given source text, with no folder to look in), while nvcc and g++ find it beside the .cu.
#pragma once

template <typename T> __host__ __device__ __forceinline__ T ot_abs(T x) { return x < T(0) ? -x : x; }
template <typename T> __host__ __device__ __forceinline__ T ot_max(T a, T b) { return a > b ? a : b; }
template <typename T> __host__ __device__ __forceinline__ T ot_min(T a, T b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ float ot_sqrt(float x) { return sqrtf(x); }
__host__ __device__ __forceinline__ double ot_sqrt(double x) { return sqrt(x); }
__host__ __device__ __forceinline__ float ot_floor(float x) { return floorf(x); }
__host__ __device__ __forceinline__ double ot_floor(double x) { return floor(x); }

#ifdef OCCLUTRACE_CPU_SHIM
// OpenMP threads for a kernel's CPU loop (OpenMP builds; a no-op otherwise). Each kernel exports
// it under its own extern "C" name. On a busy shared CPU, one thread avoids OpenMP threads
// spinning against each other.
inline void ot_cpu_set_threads(int threads) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
}
#endif
