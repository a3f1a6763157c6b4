// Uniform-grid (spatial hash) k-nearest-neighbour search over a ragged batch of point clouds.
//
// The grid of each batch item is built on the device by occlutrace_compute/nn/grid_build.py:
// reference points sorted by cell (counting sort: cell ids, counts, prefix sums), `cell_start`
// holding each cell's first position in the sorted arrays, and `cell_skip` holding, per cell, how
// many shells around it are known to be empty (a capped Chebyshev distance transform of the
// occupancy), so queries far from the surface do not probe thousands of empty cells. This file
// only searches it.
//
// One query per thread: starting at the first shell that can hold points, visit the cells around
// the query's cell in shells of growing Chebyshev radius, keep the k best in a small sorted array (insertion sort), and stop as soon as the
// smallest possible distance to any cell not yet visited exceeds the current k-th best. The shell
// count is bounded by the grid's largest dimension, so every query terminates.
//
// Exactness: distances are computed as dx*dx + dy*dy + dz*dz (compile with --fmad=false on the
// GPU to match a direct-difference brute force bit for bit). Cell bounds are shrunk by a margin
// covering the rounding of (x - origin) / h, so no point is ever skipped.
//
// The search is a __host__ __device__ function and the __global__ kernels are thin wrappers, so
// this same file compiles for the CPU with kernels/cpu_shim.h (used by the tests).
// No standard #include: NVRTC (CuPy RawModule) compiles it without the standard headers; the one
// include, the folder's shared helpers, is pasted in by kernel_files.kernel_source at run time.

#include "device_common.cuh"

template <typename T> struct GkEps;
template <> struct GkEps<float> { static constexpr float value = 1.1920929e-07f; };
template <> struct GkEps<double> { static constexpr double value = 2.220446049250313e-16; };

// Kernel parameters, shared by the GPU wrappers and the CPU loop so both have one signature.
//   query        (B, P, 3) padded query points; query_lengths (B,) real rows per item
//   query_order  (B * P,) the query (b * P + p) that thread/iteration number `slot` handles:
//                queries sorted by cell, so neighbouring threads read neighbouring cells
//   item_f       (B, 6): origin x, y, z, cell size h, 1/h, rounding margin (in cells)
//   item_i       (B, 4): grid dims nx, ny, nz, offset of the item's first cell in cell_start
//   sorted_ref   (N, 3) reference points of all items sorted by global cell id
//   sorted_idx   (N,)   each sorted point's index within its own batch item
//   cell_start   (C + 1,) first sorted position of each global cell
//   cell_skip    (C,)   shells around each cell that hold no point (a lower bound, capped)
//   out_d2/out_idx (B, P, k): written only for real query rows (the caller fills padding)
#define GRID_KNN_PARAMS(T)                                                                    \
    const T *__restrict__ query, const long long *__restrict__ query_lengths,                \
        const long long *__restrict__ query_order,                                           \
        const T *__restrict__ item_f, const long long *__restrict__ item_i,                  \
        const T *__restrict__ sorted_ref, const int *__restrict__ sorted_idx,                \
        const int *__restrict__ cell_start, const unsigned char *__restrict__ cell_skip,      \
        long long batch, long long max_queries, int k,   \
        T *__restrict__ out_d2, long long *__restrict__ out_idx

#define GRID_KNN_ARGS                                                                         \
    query, query_lengths, query_order, item_f, item_i, sorted_ref, sorted_idx, cell_start,   \
        cell_skip, batch, max_queries, k, out_d2, out_idx

// Distance (in cells, shrunk by `eps`) from coordinate u to the cell [x, x + 1).
template <typename T> __host__ __device__ __forceinline__ T gk_cell_gap(T u, int x, T eps) {
    T g = T(0);
    if (u < T(x)) g = T(x) - u;
    else if (u > T(x + 1)) g = u - T(x + 1);
    return ot_max(g - eps, T(0));
}

// k nearest neighbours of query t = query_order[slot] (t = b * max_queries + p), k <= KMAX.
template <typename T, int KMAX>
__host__ __device__ void grid_knn_query(long long slot, GRID_KNN_PARAMS(T)) {
    const long long t = query_order[slot];
    const long long b = t / max_queries;
    const long long p = t - b * max_queries;
    if (b >= batch || p >= query_lengths[b]) return;

    const T *f = item_f + 6 * b;
    const long long *gi = item_i + 4 * b;
    const int n[3] = {(int)gi[0], (int)gi[1], (int)gi[2]};
    const long long cell_base = gi[3];
    const T h = f[3], inv_h = f[4];
    const T *q = query + 3 * t;
    const T qx = q[0], qy = q[1], qz = q[2];

    // Query position in cell units, its (clamped) cell, and its distance to the grid box.
    T u[3], outside[3];
    int c[3];
    T umax = T(0);
    for (int j = 0; j < 3; ++j) {
        u[j] = (q[j] - f[j]) * inv_h;
        c[j] = u[j] < T(0) ? 0 : (u[j] >= T(n[j]) ? n[j] - 1 : (int)u[j]);
        umax = ot_max(umax, ot_abs(u[j]));
    }
    const T eps = f[5] + T(8) * GkEps<T>::value * (umax + T(1));
    for (int j = 0; j < 3; ++j) {
        T o = u[j] < T(0) ? -u[j] : (u[j] > T(n[j]) ? u[j] - T(n[j]) : T(0));
        outside[j] = ot_max(o - eps, T(0));
    }
    const T h2 = h * h;
    const T shrink = T(1) - T(16) * GkEps<T>::value;  // lower bounds are rounded down

    T best[KMAX];
    int best_i[KMAX];
    for (int j = 0; j < KMAX; ++j) {
        best[j] = T(0);
        best_i[j] = -1;
    }
    int found = 0;

    int max_shell = 0;
    for (int j = 0; j < 3; ++j) max_shell = ot_max(max_shell, ot_max(c[j], n[j] - 1 - c[j]));

    const int first_shell = cell_skip[cell_base + ((long long)c[2] * n[1] + c[1]) * n[0] + c[0]];
    for (int s = first_shell; s <= max_shell; ++s) {
        const int z0 = ot_max(c[2] - s, 0), z1 = ot_min(c[2] + s, n[2] - 1);
        const int y0 = ot_max(c[1] - s, 0), y1 = ot_min(c[1] + s, n[1] - 1);
        for (int z = z0; z <= z1; ++z) {
            const bool z_face = (z == c[2] - s) || (z == c[2] + s);
            const T gz = gk_cell_gap(u[2], z, eps);
            if (found == k && gz * gz * h2 * shrink > best[k - 1]) continue;
            for (int y = y0; y <= y1; ++y) {
                const bool y_face = (y == c[1] - s) || (y == c[1] + s);
                const T gy = gk_cell_gap(u[1], y, eps);
                if (found == k && (gy * gy + gz * gz) * h2 * shrink > best[k - 1]) continue;
                // Inside the shell's z and y faces every x is new; elsewhere only x = c +- s.
                const bool full_row = z_face || y_face || s == 0;
                int x_lo = c[0] - s, x_hi = c[0] + s;
                if (full_row && found == k) {
                    // Clip the row to the cells the k-th best sphere can reach, one cell of slack
                    // each side; the exact per-cell test below still decides.
                    const T reach = ot_sqrt(ot_max(best[k - 1] / (h2 * shrink) - gy * gy - gz * gz, T(0)));
                    x_lo = ot_max(x_lo, (int)ot_max(ot_floor(u[0] - T(1) - eps - reach), T(x_lo - 1)) - 1);
                    x_hi = ot_min(x_hi, (int)ot_min(ot_floor(u[0] + eps + reach), T(x_hi + 1)) + 1);
                }
                const int step = full_row ? 1 : 2 * s;
                for (int x = x_lo; x <= x_hi; x += step) {
                    if (x < 0 || x >= n[0]) continue;
                    if (found == k) {
                        const T gx = gk_cell_gap(u[0], x, eps);
                        if ((gx * gx + gy * gy + gz * gz) * h2 * shrink > best[k - 1]) continue;
                    }
                    const long long cell = cell_base + ((long long)z * n[1] + y) * n[0] + x;
                    const int end = cell_start[cell + 1];
                    for (int i = cell_start[cell]; i < end; ++i) {
                        const T dx = sorted_ref[3 * (long long)i] - qx;
                        const T dy = sorted_ref[3 * (long long)i + 1] - qy;
                        const T dz = sorted_ref[3 * (long long)i + 2] - qz;
                        const T d2 = dx * dx + dy * dy + dz * dz;
                        if (found == k && !(d2 < best[k - 1])) continue;
                        int m = found < k ? found : k - 1;
                        while (m > 0 && best[m - 1] > d2) {
                            best[m] = best[m - 1];
                            best_i[m] = best_i[m - 1];
                            --m;
                        }
                        best[m] = d2;
                        best_i[m] = sorted_idx[i];
                        if (found < k) ++found;
                    }
                }
            }
        }
        // Lower bound on the distance to any cell outside the box [c - s, c + s]: per remaining
        // side, the gap to that side's slab plus the query's distance to the grid box elsewhere.
        bool remaining = false;
        T lb2 = T(0);
        for (int j = 0; j < 3; ++j) {
            T other = T(0);
            for (int o = 0; o < 3; ++o)
                if (o != j) other += outside[o] * outside[o];
            if (c[j] - s > 0) {
                const T g = ot_max(u[j] - T(c[j] - s) - eps, T(0));
                lb2 = remaining ? ot_min(lb2, g * g + other) : g * g + other;
                remaining = true;
            }
            if (c[j] + s < n[j] - 1) {
                const T g = ot_max(T(c[j] + s + 1) - u[j] - eps, T(0));
                lb2 = remaining ? ot_min(lb2, g * g + other) : g * g + other;
                remaining = true;
            }
        }
        if (!remaining) break;
        if (found == k && lb2 * h2 * shrink > best[k - 1]) break;
    }

    T *d_out = out_d2 + (long long)k * t;
    long long *i_out = out_idx + (long long)k * t;
    for (int j = 0; j < found; ++j) {
        d_out[j] = best[j];
        i_out[j] = best_i[j];
    }
}

template <typename T>
__host__ __device__ __forceinline__ void grid_knn_dispatch(long long slot, GRID_KNN_PARAMS(T)) {
    if (k <= 1) grid_knn_query<T, 1>(slot, GRID_KNN_ARGS);
    else if (k <= 4) grid_knn_query<T, 4>(slot, GRID_KNN_ARGS);
    else if (k <= 8) grid_knn_query<T, 8>(slot, GRID_KNN_ARGS);
    else if (k <= 16) grid_knn_query<T, 16>(slot, GRID_KNN_ARGS);
    else if (k <= 32) grid_knn_query<T, 32>(slot, GRID_KNN_ARGS);
    else grid_knn_query<T, 64>(slot, GRID_KNN_ARGS);
}

#ifdef OCCLUTRACE_CPU_SHIM
// CPU build: one loop over all (batch item, query) pairs. Returns 0, or 1 if k is out of range.
#define GRID_KNN_CPU_LOOP(NAME, T)                                                             \
    extern "C" int NAME(GRID_KNN_PARAMS(T)) {                                                 \
        if (k < 1 || k > 64) return 1;                                                        \
        const long long total = batch * max_queries;                                          \
        _Pragma("omp parallel for schedule(dynamic, 256)")                                    \
        for (long long slot = 0; slot < total; ++slot) grid_knn_dispatch<T>(slot, GRID_KNN_ARGS); \
        return 0;                                                                             \
    }
GRID_KNN_CPU_LOOP(grid_knn_cpu_f32, float)
GRID_KNN_CPU_LOOP(grid_knn_cpu_f64, double)

// Threads for the loops above (device_common.cuh).
extern "C" void grid_knn_cpu_set_threads(int threads) { ot_cpu_set_threads(threads); }
#else
// GPU build: thin launch wrappers, one thread per (batch item, query); KMAX fixed per kernel so
// the k-best arrays of the common k = 1 case live in registers.
#define GRID_KNN_KERNEL(NAME, T, KMAX)                                                         \
    extern "C" __global__ void NAME(GRID_KNN_PARAMS(T)) {                                     \
        const long long slot = (long long)blockIdx.x * blockDim.x + threadIdx.x;              \
        if (slot < batch * max_queries) grid_knn_query<T, KMAX>(slot, GRID_KNN_ARGS);         \
    }
GRID_KNN_KERNEL(grid_knn_f32_k1, float, 1)
GRID_KNN_KERNEL(grid_knn_f32_k4, float, 4)
GRID_KNN_KERNEL(grid_knn_f32_k8, float, 8)
GRID_KNN_KERNEL(grid_knn_f32_k16, float, 16)
GRID_KNN_KERNEL(grid_knn_f32_k32, float, 32)
GRID_KNN_KERNEL(grid_knn_f32_k64, float, 64)
GRID_KNN_KERNEL(grid_knn_f64_k1, double, 1)
GRID_KNN_KERNEL(grid_knn_f64_k4, double, 4)
GRID_KNN_KERNEL(grid_knn_f64_k8, double, 8)
GRID_KNN_KERNEL(grid_knn_f64_k16, double, 16)
GRID_KNN_KERNEL(grid_knn_f64_k32, double, 32)
GRID_KNN_KERNEL(grid_knn_f64_k64, double, 64)
#endif
