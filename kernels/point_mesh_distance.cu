// Exact signed point-to-mesh distance: one query point per thread, a bounding-volume hierarchy
// over the triangles, float64 throughout.
//
// The tree is built on the host by occlutrace_compute/analysis/distance_device.py: triangles
// sorted by the Morton code of their centroids, cut into leaves of `leaf_size` faces (the last
// leaves padded with face -1), and an implicit complete binary tree over the leaves: node 1 is
// the root, node i has children 2i and 2i+1, nodes n_leaf .. 2 n_leaf - 1 are the leaves (n_leaf
// a power of two). node_box[i] = (lo x, y, z, hi x, y, z) of the faces below node i; empty
// nodes hold lo = +inf, hi = -inf. This file only searches it.
//
// Search: depth-first, nearer child first, a node is skipped when the lower bound on its box
// distance exceeds the best squared distance so far (which starts at the cutoff's square, so a
// point with no surface within the cutoff stops at the root's box). Every node is visited at most
// once and its children's boxes are tested when it is opened: at most 2 n_leaf - 1 box tests
// (counting each box once; the re-check of a popped node's box is not counted) and M triangle
// tests per point, and the stack never holds more than depth + 1 nodes, whatever the values.
//
// Exactness: the closest point on a triangle is Ericson's (Real-Time Collision Detection 5.1.5)
// written in the same operations, in the same order, as analysis/triangles.py's numpy version;
// compiled without FMA contraction (--fmad=false on the GPU, -ffp-contract=off on the CPU) the
// winner's distance, closest point and region equal the numpy ones bit for bit. Box lower bounds
// are shrunk by a rounding margin, so no triangle is pruned that could beat the best by more than
// rounding. The sign is the pseudo-normal of the closest feature (region: face, edge or vertex;
// Baerentzen & Aanaes), or the barycentric blend of vertex normals, exactly as distance.py signs.
//
// The search is a __host__ __device__ function and the __global__ kernel is a thin wrapper, so
// this file compiles for the CPU with kernels/cpu_shim.h (the tests' and CPU benchmarks' twin).
// No standard #include: NVRTC (CuPy RawModule) compiles it without the standard headers; the one
// include, the folder's shared helpers, is pasted in by kernel_files.kernel_source at run time.

#include "device_common.cuh"

#define PMD_FLAT 1.4901161193847656e-08  // 2^-26 = sqrt(eps): triangles.py FLAT[float64]
#define PMD_STACK 64  // >= tree depth + 1; the host refuses deeper trees (n_leaf > 2^48)

__host__ __device__ __forceinline__ double pmd_ratio(double num, double den) {
    return den == 0.0 ? 0.0 : num / den;  // numpy's _ratio: 0 for degenerate triangles
}

__host__ __device__ __forceinline__ double pmd_clamp01(double x) {
    return x < 0.0 ? 0.0 : (x > 1.0 ? 1.0 : x);  // np.clip(x, 0, 1)
}

__host__ __device__ __forceinline__ double pmd_dot(const double *x, const double *y) {
    return x[0] * y[0] + x[1] * y[1] + x[2] * y[2];
}

// Closest point of p on triangle (a, b, c): writes point, (v, w) with point = a + v ab + w ac,
// returns the squared distance; *region: 0 interior, 1..3 edges ab, bc, ca, 4..6 vertices a, b, c.
__host__ __device__ __forceinline__ double pmd_closest(const double *p, const double *a, const double *b,
                                                       const double *c, double *point, double *v_out,
                                                       double *w_out, int *region) {
    double ab[3], ac[3], ap[3], bp[3], cp[3];
    for (int j = 0; j < 3; ++j) {
        ab[j] = b[j] - a[j];
        ac[j] = c[j] - a[j];
        ap[j] = p[j] - a[j];
        bp[j] = p[j] - b[j];
        cp[j] = p[j] - c[j];
    }
    const double d1 = pmd_dot(ab, ap), d2 = pmd_dot(ac, ap);
    const double d3 = pmd_dot(ab, bp), d4 = pmd_dot(ac, bp);
    const double d5 = pmd_dot(ab, cp), d6 = pmd_dot(ac, cp);
    const double va = d3 * d6 - d5 * d4;
    const double vb = d5 * d2 - d1 * d6;
    const double vc = d1 * d4 - d3 * d2;
    double v, w;
    int r;
    // Ericson's tests in order: the first that matches wins (triangles.py applies them in
    // reverse so the same one wins).
    if (d1 <= 0.0 && d2 <= 0.0) {
        v = 0.0; w = 0.0; r = 4;
    } else if (d3 >= 0.0 && d4 <= d3) {
        v = 1.0; w = 0.0; r = 5;
    } else if (vc <= 0.0 && d1 >= 0.0 && d3 <= 0.0 && d1 > d3) {  // d1 - d3 = |ab|^2: not a == b
        v = pmd_ratio(d1, d1 - d3); w = 0.0; r = 1;
    } else if (d6 >= 0.0 && d5 <= d6) {
        v = 0.0; w = 1.0; r = 6;
    } else if (vb <= 0.0 && d2 >= 0.0 && d6 <= 0.0) {
        v = 0.0; w = pmd_ratio(d2, d2 - d6); r = 3;
    } else if (va <= 0.0 && d4 - d3 >= 0.0 && d5 - d6 >= 0.0) {
        const double t = pmd_ratio(d4 - d3, (d4 - d3) + (d5 - d6));
        v = 1.0 - t; w = t; r = 2;
    } else {
        v = pmd_ratio(vb, va + vb + vc); w = pmd_ratio(vc, va + vb + vc); r = 0;
    }
    // a (near-)straight-line triangle (sin^2 of its angle at a under PMD_FLAT) or an interior
    // answer off the triangle: the nearest of Ericson's answer (if on the triangle) and the
    // clamped side projections ab, bc, ca, first on ties (triangles.py _nearest_side: same
    // arithmetic, same order)
    const double den = va + vb + vc;
    const bool on = v >= 0.0 && w >= 0.0 && v + w <= 1.0;
    if (den <= PMD_FLAT * ((d1 - d3) * (d2 - d6)) || (r == 0 && !on)) {  // |ab|^2 |ac|^2
        const double t_ab = pmd_clamp01(pmd_ratio(d1, d1 - d3));
        const double t_bc = pmd_clamp01(pmd_ratio(d4 - d3, (d4 - d3) + (d5 - d6)));
        const double t_ca = pmd_clamp01(pmd_ratio(d2, d2 - d6));
        const double sv[4] = {v, t_ab, 1.0 - t_bc, 0.0}, sw[4] = {w, 0.0, t_bc, t_ca};
        const double st[4] = {0.5, t_ab, t_bc, t_ca};
        const int edge[4] = {r, 1, 2, 3}, start[4] = {r, 4, 5, 4}, end[4] = {r, 5, 6, 6};
        double best = 0.0;
        bool found = false;
        for (int k = on ? 0 : 1; k < 4; ++k) {
            double diff[3];
            for (int j = 0; j < 3; ++j) diff[j] = p[j] - (a[j] + sv[k] * ab[j] + sw[k] * ac[j]);
            const double sq = pmd_dot(diff, diff);
            if (!found || sq < best) {
                found = true;
                best = sq;
                v = sv[k]; w = sw[k];
                r = k == 0 ? r : (st[k] == 0.0 ? start[k] : (st[k] == 1.0 ? end[k] : edge[k]));
            }
        }
    }
    double diff[3];
    for (int j = 0; j < 3; ++j) {
        point[j] = a[j] + v * ab[j] + w * ac[j];
        diff[j] = p[j] - point[j];
    }
    *v_out = v;
    *w_out = w;
    *region = r;
    return pmd_dot(diff, diff);
}

// Lower bound on the squared distance of p to box (lo, hi), rounded down; +inf for an empty box.
__host__ __device__ __forceinline__ double pmd_box_sq(const double *p, const double *box) {
    double s = 0.0;
    for (int j = 0; j < 3; ++j) {
        const double lo = box[j], hi = box[3 + j];  // empty: lo = +inf, so g = +inf
        const double g = p[j] < lo ? lo - p[j] : (p[j] > hi ? p[j] - hi : 0.0);
        s += g * g;
    }
    return s * (1.0 - 1e-14);  // a relative 16 ulp margin against the rounding of the sum
}

// Kernel parameters, shared by the GPU wrapper and the CPU loop so both have one signature.
//   points       (N, 3) query points; order (N,): the point handled by thread `slot`
//                (points sorted along the tree's curve, so a warp walks the same branches)
//   node_box     (2 n_leaf, 6) node boxes (row 0 unused); leaf_faces (n_leaf * leaf_size,)
//   vertices     (V, 3); faces (M, 3); face_edges (M, 3) edge ids of (a,b), (b,c), (c,a)
//   face_normals (M, 3); edge_normals (E, 3); vertex_normals (V, 3)
//   boundary_edge (E,), boundary_vertex (V,): 1 on the open boundary
//   limit_sq     squared padded cutoff (+inf: none); limit: the cutoff itself (+inf: none)
//   sign_from_vertices: 0 pseudo-normal of the closest feature, 1 blended vertex normals
//   out_*        (N,), (N, 3), (N,), (N,): signed distance, closest point, face, on the open
//                boundary; written only for points with a triangle within the cutoff (the caller
//                fills them with NaN, NaN, -1, 0 first)
//   out_work     (N,) or null: box tests + triangle tests of each point (tests check the bound)
#define PMD_PARAMS                                                                                \
    const double *__restrict__ points, const long long *__restrict__ order, long long n_points,  \
        const double *__restrict__ node_box, const int *__restrict__ leaf_faces, long long n_leaf, \
        int leaf_size, const double *__restrict__ vertices, const long long *__restrict__ faces,  \
        const long long *__restrict__ face_edges, const double *__restrict__ face_normals,       \
        const double *__restrict__ edge_normals, const double *__restrict__ vertex_normals,      \
        const unsigned char *__restrict__ boundary_edge,                                          \
        const unsigned char *__restrict__ boundary_vertex, double limit_sq, double limit,         \
        int sign_from_vertices, double *__restrict__ out_distance, double *__restrict__ out_closest, \
        long long *__restrict__ out_face, unsigned char *__restrict__ out_boundary,               \
        long long *__restrict__ out_work

#define PMD_ARGS                                                                                  \
    points, order, n_points, node_box, leaf_faces, n_leaf, leaf_size, vertices, faces, face_edges, \
        face_normals, edge_normals, vertex_normals, boundary_edge, boundary_vertex, limit_sq, limit, \
        sign_from_vertices, out_distance, out_closest, out_face, out_boundary, out_work

__host__ __device__ void pmd_query(long long slot, PMD_PARAMS) {
    const long long t = order[slot];
    const double p[3] = {points[3 * t], points[3 * t + 1], points[3 * t + 2]};
    double best = limit_sq;
    long long best_face = -1;

    long long stack[PMD_STACK];
    int top = 0;
    stack[top++] = 1;
    long long work = 1;  // the root's box test
    if (pmd_box_sq(p, node_box + 6) > best) top = 0;
    while (top > 0) {
        const long long node = stack[--top];
        // Children are tested when their parent is opened; re-check: best may have shrunk since.
        if (pmd_box_sq(p, node_box + 6 * node) > best) continue;
        if (node >= n_leaf) {
            const int *leaf = leaf_faces + (node - n_leaf) * leaf_size;
            for (int i = 0; i < leaf_size; ++i) {
                const long long f = leaf[i];
                if (f < 0) break;  // padding comes last
                ++work;
                double point[3], v, w;
                int r;
                const double d2 = pmd_closest(p, vertices + 3 * faces[3 * f], vertices + 3 * faces[3 * f + 1],
                                              vertices + 3 * faces[3 * f + 2], point, &v, &w, &r);
                if (d2 < best) {  // ties keep the first found
                    best = d2;
                    best_face = f;
                }
            }
            continue;
        }
        // Push the farther child first so the nearer one is searched first (a tight best early).
        const long long l = 2 * node, rr = 2 * node + 1;
        const double dl = pmd_box_sq(p, node_box + 6 * l), dr = pmd_box_sq(p, node_box + 6 * rr);
        work += 2;
        if (dl <= dr) {
            if (dr <= best) stack[top++] = rr;
            if (dl <= best) stack[top++] = l;
        } else {
            if (dl <= best) stack[top++] = l;
            if (dr <= best) stack[top++] = rr;
        }
    }

    if (out_work) out_work[t] = work;
    if (best_face < 0) return;  // the caller filled the outputs with "nothing within the cutoff"
    const long long f = best_face;
    const long long *fv = faces + 3 * f;
    double point[3], v, w;
    int r;
    const double d2 = pmd_closest(p, vertices + 3 * fv[0], vertices + 3 * fv[1], vertices + 3 * fv[2], point, &v,
                                  &w, &r);
    const double d = ot_sqrt(d2);
    if (!(d <= limit)) return;  // within the padded cutoff only: beyond the cutoff itself
    double normal[3];
    if (sign_from_vertices) {
        const double bary[3] = {1.0 - v - w, v, w};
        for (int j = 0; j < 3; ++j)
            normal[j] = bary[0] * vertex_normals[3 * fv[0] + j] + bary[1] * vertex_normals[3 * fv[1] + j] +
                        bary[2] * vertex_normals[3 * fv[2] + j];
    } else {
        const double *n = r == 0   ? face_normals + 3 * f
                          : r <= 3 ? edge_normals + 3 * face_edges[3 * f + r - 1]
                                   : vertex_normals + 3 * fv[r - 4];
        for (int j = 0; j < 3; ++j) normal[j] = n[j];
    }
    double side[3];
    for (int j = 0; j < 3; ++j) side[j] = p[j] - point[j];
    out_distance[t] = pmd_dot(side, normal) < 0.0 ? -d : d;
    double *closest = out_closest + 3 * t;
    for (int j = 0; j < 3; ++j) closest[j] = point[j];
    out_face[t] = f;
    out_boundary[t] = r == 0 ? 0 : (r <= 3 ? boundary_edge[face_edges[3 * f + r - 1]] : boundary_vertex[fv[r - 4]]);
}

#ifdef OCCLUTRACE_CPU_SHIM
// CPU build: one OpenMP loop over the points.
extern "C" void point_mesh_distance_cpu(PMD_PARAMS) {
    _Pragma("omp parallel for schedule(dynamic, 64)")
    for (long long slot = 0; slot < n_points; ++slot) pmd_query(slot, PMD_ARGS);
}

// Threads for the loop above (device_common.cuh).
extern "C" void point_mesh_distance_cpu_set_threads(int threads) { ot_cpu_set_threads(threads); }
#else
// GPU build: one thread per point.
extern "C" __global__ void point_mesh_distance(PMD_PARAMS) {
    const long long slot = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (slot < n_points) pmd_query(slot, PMD_ARGS);
}
#endif
