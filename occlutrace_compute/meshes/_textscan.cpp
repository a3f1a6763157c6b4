// _textscan: the byte work of the text mesh readers (meshes/text.py) and binary STL's records,
// without the GIL.
//
// Generic, bounds-checked primitives over a read-only byte buffer; the format logic (keywords,
// layouts, metadata, errors) stays in Python. Every function validates its arguments while
// holding the GIL, releases it for the O(n) loop, and writes into output arrays the caller
// passes (numpy, via the buffer protocol), sized from count_tokens or from a header; the only
// allocations are first_equal's hash table (<= 32 bytes a range), stl_binary's and weld_rows'
// (<= 64 and 112 bytes a corner) and stl_write's output.
//
//   count_tokens(buf) -> t                       whitespace-separated tokens in buf
//   tokenize(buf, start, end, line, brk) -> t    their [start, end) offsets and line numbers
//                                                (line: int; uint8: 1 where a line starts; None)
//   floats(buf, start, end, out) -> i            float64 of token ranges; -1, or the first refused
//   integers(buf, start, end, out) -> i          int64 of '-'?digits{1,18} token ranges, likewise
//   keys(buf, start, end, out) -> -1             uint64 of each token's first 8 bytes (text.keys)
//   (floats, integers and keys take an optional 5th argument, index: read tokens index[j])
//   first_equal(buf, start, end, out) -> bool    out[j]: the first range with the bytes of range j
//   nth_byte(buf, byte, r) -> offset             of the r-th occurrence of byte (-1: fewer)
//   scan_floats(buf, out) -> (t, i)              float64 of every token of buf, into out
//   scan_integers(buf, out) -> (t, i)            int64 likewise
//   stl_binary(buf, n, faces, first, keep, tol, probes, seed) -> (distinct, foreign, tagged) | None
//                                                binary STL records: weld, normals, degenerate faces
//   stl_vertices(buf, n, first, out) -> rows     float64 of the welded corners; rows non-finite
//   stl_write(vertices, faces) -> bytes | None   a mesh as binary STL (the only output it allocates)
//   weld_rows(rows, ranks, first, probes, seed) -> distinct | None   merge_exact of float64 rows
//   face_checks(vertices, faces, normals, tol, keep) -> foreign | None   stl_binary's face checks
//
// Whitespace is the 6 ASCII bytes Python's bytes.split() splits on (9-13, 32). A float token is
// accepted only in the plain decimal form [+-]?(d+[.d*]|.d+)([eE][+-]?d+)? and only when
// std::from_chars converts all of it in range (libstdc++ 12: fast_float, correctly rounded, so
// the value Python's float() gives); anything else (nan, inf, hex, '1_0', 1e999, underflow to
// zero, NUL or non-ASCII bytes) is refused and the caller takes its exact Python path, whose
// verdict and values stand. Time O(n) for n bytes (first_equal: bounded probes and compares);
// memory O(1) beyond the caller's arrays, except first_equal's table.

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <chrono>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <system_error>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace {

inline bool is_space(unsigned char c) { return c == 32 || (c >= 9 && c <= 13); }
inline bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

// 64 bytes at a time: bit j of a mask is byte j of the block. Blocks past the end of the
// buffer are read from a local copy padded with spaces (whitespace: no token grows there), so
// no read ever passes the buffer's end.
struct Masks {
    uint64_t space, brk;
};

#if defined(__SSE2__)
inline uint64_t movemask4(__m128i a, __m128i b, __m128i c, __m128i d) {
    return static_cast<uint64_t>(static_cast<uint16_t>(_mm_movemask_epi8(a))) |
           static_cast<uint64_t>(static_cast<uint16_t>(_mm_movemask_epi8(b))) << 16 |
           static_cast<uint64_t>(static_cast<uint16_t>(_mm_movemask_epi8(c))) << 32 |
           static_cast<uint64_t>(static_cast<uint16_t>(_mm_movemask_epi8(d))) << 48;
}

inline Masks block_masks(const unsigned char* p, unsigned char brk) {
    const __m128i nine = _mm_set1_epi8(9), four = _mm_set1_epi8(4), space = _mm_set1_epi8(32),
                  br = _mm_set1_epi8(static_cast<char>(brk));
    __m128i ws[4], lb[4];
    for (int k = 0; k < 4; ++k) {
        __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * k));
        __m128i x = _mm_sub_epi8(c, nine);  // 9..13 -> 0..4; every other byte above 4 (unsigned)
        ws[k] = _mm_or_si128(_mm_cmpeq_epi8(_mm_min_epu8(x, four), x), _mm_cmpeq_epi8(c, space));
        lb[k] = _mm_cmpeq_epi8(c, br);
    }
    return {movemask4(ws[0], ws[1], ws[2], ws[3]), movemask4(lb[0], lb[1], lb[2], lb[3])};
}
#else
inline Masks block_masks(const unsigned char* p, unsigned char brk) {
    uint64_t ws = 0, lb = 0;
    for (int j = 0; j < 64; ++j) {
        ws |= static_cast<uint64_t>(is_space(p[j])) << j;
        lb |= static_cast<uint64_t>(p[j] == brk) << j;
    }
    return {ws, lb};
}
#endif

// Calls emit(a, b, line) for every token [a, b) of [d, d + n) in order (line: the break bytes
// before a), from 64-byte blocks' start and end masks; stops when emit returns false.
// A token may start in one block and end in a later one: one start is carried over.
template <typename Emit>
void each_token(const unsigned char* d, Py_ssize_t n, unsigned char brk, Emit emit) {
    uint64_t prev_space = 1;  // whitespace at the byte before the block (none before the buffer)
    unsigned char tail[64];
    Py_ssize_t a = 0;
    int64_t line_base = 0, a_line = 0;
    bool open = false;
    for (Py_ssize_t base = 0; base < n; base += 64) {
        const unsigned char* p = d + base;
        if (n - base < 64) {  // the last, partial block: spaces after the end (no token grows there)
            std::memset(tail, ' ', sizeof tail);
            std::memcpy(tail, p, static_cast<size_t>(n - base));
            p = tail;
        }
        Masks m = block_masks(p, brk);
        uint64_t before = (m.space << 1) | prev_space;
        uint64_t starts = ~m.space & before, ends = m.space & ~before;
        prev_space = m.space >> 63;
        for (;;) {
            if (!open) {
                if (!starts) break;
                int j = __builtin_ctzll(starts);
                starts &= starts - 1;
                a = base + j;
                a_line = line_base + __builtin_popcountll(m.brk & ((uint64_t{1} << j) - 1));
                open = true;
            }
            if (!ends) break;
            int j = __builtin_ctzll(ends);
            ends &= ends - 1;
            open = false;
            if (!emit(a, base + j, a_line)) return;
        }
        line_base += __builtin_popcountll(m.brk);
    }
    if (open) emit(a, n, a_line);  // a token running to the end of a buffer of whole blocks
}

// A buffer's payload: a read-only view held for the duration of a call.
struct View {
    Py_buffer b{};
    bool held = false;
    const void* limit = nullptr;  // (outputs of keys: the end of the buffer its tokens are in)
    ~View() {
        if (held) PyBuffer_Release(&b);
    }
    const unsigned char* data() const { return static_cast<const unsigned char*>(b.buf); }
    Py_ssize_t size() const { return b.len; }
};

bool get_bytes(PyObject* obj, View& v) {
    if (PyObject_GetBuffer(obj, &v.b, PyBUF_C_CONTIGUOUS) < 0) return false;
    v.held = true;
    if (v.b.itemsize != 1) {
        PyErr_SetString(PyExc_TypeError, "expected a buffer of bytes");
        return false;
    }
    return true;
}

// The type of a 1-D output or index array: 'i' int32, 'q' int64, 'd' float64.
char kind_of(const Py_buffer& b) {
    const char* f = b.format ? b.format : "B";
    if (*f == '@' || *f == '=' || *f == '<') ++f;
    if (f[0] == 0 || f[1] != 0) return 0;
    switch (f[0]) {
        case 'i':
        case 'l':
        case 'q':
            return b.itemsize == 4 ? 'i' : (b.itemsize == 8 ? 'q' : 0);
        case 'L':
        case 'Q':
            return b.itemsize == 8 ? 'Q' : 0;
        case 'd':
            return b.itemsize == 8 ? 'd' : 0;
        case 'B':
        case '?':
            return b.itemsize == 1 ? 'B' : 0;
        default:
            return 0;
    }
}

bool get_array(PyObject* obj, View& v, bool writable, const char* kinds, const char* what) {
    int flags = PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &v.b, flags) < 0) return false;
    v.held = true;
    char k = kind_of(v.b);
    if (k == 0 || std::strchr(kinds, k) == nullptr) {
        PyErr_Format(PyExc_TypeError, "%s: expected a contiguous array of type %s", what, kinds);
        return false;
    }
    return true;
}

Py_ssize_t items(const View& v) { return v.b.len / v.b.itemsize; }

inline int64_t load_index(const View& v, Py_ssize_t i) {
    return v.b.itemsize == 4 ? static_cast<const int32_t*>(v.b.buf)[i] : static_cast<const int64_t*>(v.b.buf)[i];
}

inline void store_index(View& v, Py_ssize_t i, int64_t x) {
    if (v.b.itemsize == 4)
        static_cast<int32_t*>(v.b.buf)[i] = static_cast<int32_t>(x);
    else
        static_cast<int64_t*>(v.b.buf)[i] = x;
}

// One float token [p, q): true and *out set when it is a plain decimal in range. from_chars
// (general format) reads [-](d+[.d*]|.d+)([eE][+-]?d+)?, and also inf/infinity/nan[(...)]: those
// start with a letter, refused here before it is called; '+' is skipped when a digit or '.'
// follows (Python's float() reads it, from_chars does not).
inline bool parse_float(const char* p, const char* q, double* out) {
    const char* first = p;
    if (first < q && *first == '+') ++first;
    const char* s = (first < q && *first == '-' && first == p) ? first + 1 : first;
    if (s == q || !(is_digit(static_cast<unsigned char>(*s)) || *s == '.')) return false;
    double v = 0.0;
    auto r = std::from_chars(first, q, v, std::chars_format::general);
    if (r.ec != std::errc() || r.ptr != q) return false;  // out of range (overflow, underflow to 0)
    *out = v;
    return true;
}

constexpr int kMaxIntDigits = 18;  // always fits int64, the limit of text.whole_numbers

inline bool parse_int(const unsigned char* p, const unsigned char* q, int64_t* out) {
    bool neg = p < q && *p == '-';
    if (neg) ++p;
    Py_ssize_t n = q - p;
    if (n < 1 || n > kMaxIntDigits) return false;
    int64_t v = 0;
    for (; p < q; ++p) {
        if (!is_digit(*p)) return false;
        v = v * 10 + (*p - '0');
    }
    *out = neg ? -v : v;
    return true;
}

PyObject* count_tokens(PyObject*, PyObject* args) {
    PyObject* o;
    if (!PyArg_ParseTuple(args, "O", &o)) return nullptr;
    View buf;
    if (!get_bytes(o, buf)) return nullptr;
    const unsigned char* d = buf.data();
    Py_ssize_t n = buf.size(), t = 0;
    Py_BEGIN_ALLOW_THREADS;
    uint64_t prev_space = 1;
    unsigned char tail[64];
    for (Py_ssize_t base = 0; base < n; base += 64) {
        const unsigned char* p = d + base;
        if (n - base < 64) {
            std::memset(tail, ' ', sizeof tail);
            std::memcpy(tail, p, static_cast<size_t>(n - base));
            p = tail;
        }
        uint64_t space = block_masks(p, '\n').space;
        t += __builtin_popcountll(~space & ((space << 1) | prev_space));
        prev_space = space >> 63;
    }
    Py_END_ALLOW_THREADS;
    return PyLong_FromSsize_t(t);
}

// The token tables of one index type: false when more than `cap` tokens. Mode 0: no line
// output; 1: each token's line number (type I); 2: a uint8 flag, 1 where a line break falls
// between the previous token (the buffer's start, for the first) and this one.
template <typename I, int Mode>
bool fill(const unsigned char* d, Py_ssize_t n, unsigned char brk, I* s, I* e, void* l, Py_ssize_t cap,
          Py_ssize_t& t) {
    bool room = true;
    int64_t prev = 0;
    each_token(d, n, brk, [&](Py_ssize_t a, Py_ssize_t b, int64_t ln) {
        if (t == cap) {
            room = false;
            return false;
        }
        s[t] = static_cast<I>(a);
        e[t] = static_cast<I>(b);
        if (Mode == 1) static_cast<I*>(l)[t] = static_cast<I>(ln);
        if (Mode == 2) {
            static_cast<uint8_t*>(l)[t] = ln != prev;
            prev = ln;
        }
        ++t;
        return true;
    });
    return room;
}

template <typename I>
bool fill_any(const unsigned char* d, Py_ssize_t n, unsigned char brk, I* s, I* e, void* l, int mode, Py_ssize_t cap,
              Py_ssize_t& t) {
    if (mode == 1) return fill<I, 1>(d, n, brk, s, e, l, cap, t);
    if (mode == 2) return fill<I, 2>(d, n, brk, s, e, l, cap, t);
    return fill<I, 0>(d, n, brk, s, e, l, cap, t);
}

PyObject* tokenize(PyObject*, PyObject* args) {
    PyObject *o, *so, *eo, *lo;
    int brk;
    if (!PyArg_ParseTuple(args, "OOOOi", &o, &so, &eo, &lo, &brk)) return nullptr;
    View buf, start, end, line;
    if (!get_bytes(o, buf) || !get_array(so, start, true, "iq", "start") || !get_array(eo, end, true, "iq", "end"))
        return nullptr;
    bool lines = lo != Py_None;
    if (lines && !get_array(lo, line, true, "iqB", "line")) return nullptr;
    const int mode = !lines ? 0 : (kind_of(line.b) == 'B' ? 2 : 1);
    Py_ssize_t cap = items(start);
    if (items(end) != cap || (lines && items(line) != cap)) {
        PyErr_SetString(PyExc_ValueError, "start, end and line must have the same length");
        return nullptr;
    }
    Py_ssize_t n = buf.size();
    int64_t limit = INT64_MAX;
    if (start.b.itemsize == 4 || end.b.itemsize == 4 || (mode == 1 && line.b.itemsize == 4)) limit = INT32_MAX;
    if (brk != '\n' && brk != '\r') {
        PyErr_SetString(PyExc_ValueError, "the line break byte must be 10 (LF) or 13 (CR)");
        return nullptr;
    }
    if (n >= limit) {  // every offset and line number is at most n
        PyErr_SetString(PyExc_OverflowError, "buffer too large for 32-bit offsets");
        return nullptr;
    }
    if (start.b.itemsize != end.b.itemsize || (mode == 1 && line.b.itemsize != start.b.itemsize)) {
        PyErr_SetString(PyExc_TypeError, "start, end and line must have the same type");
        return nullptr;
    }
    const unsigned char* d = buf.data();
    const unsigned char b = static_cast<unsigned char>(brk);
    Py_ssize_t t = 0;
    bool overflow = false;
    Py_BEGIN_ALLOW_THREADS;
    void* l = lines ? line.b.buf : nullptr;
    if (start.b.itemsize == 4)
        overflow = !fill_any(d, n, b, static_cast<int32_t*>(start.b.buf), static_cast<int32_t*>(end.b.buf), l, mode, cap, t);
    else
        overflow = !fill_any(d, n, b, static_cast<int64_t*>(start.b.buf), static_cast<int64_t*>(end.b.buf), l, mode, cap, t);
    Py_END_ALLOW_THREADS;
    if (overflow) {
        PyErr_SetString(PyExc_ValueError, "more tokens than the arrays hold");
        return nullptr;
    }
    return PyLong_FromSsize_t(t);
}

// Converts token ranges [start[i], end[i]) into out[j], i = j (or i = index[j] when an index
// array is given: a subset of a token table, without gathering its offsets first).
template <typename Convert>
PyObject* ranges(PyObject* args, const char* out_kind, Convert convert) {
    PyObject *o, *so, *eo, *oo, *io = Py_None;
    if (!PyArg_ParseTuple(args, "OOOO|O", &o, &so, &eo, &oo, &io)) return nullptr;
    View buf, start, end, out, index;
    if (!get_bytes(o, buf) || !get_array(so, start, false, "iq", "start") || !get_array(eo, end, false, "iq", "end") ||
        !get_array(oo, out, true, out_kind, "out"))
        return nullptr;
    bool indexed = io != Py_None;
    if (indexed && !get_array(io, index, false, "iq", "index")) return nullptr;
    Py_ssize_t tokens = items(start), k = indexed ? items(index) : tokens;
    if (items(end) != tokens || items(out) != k) {
        PyErr_SetString(PyExc_ValueError, "start and end, and out and the tokens read, must have the same length");
        return nullptr;
    }
    const int64_t n = buf.size();
    out.limit = buf.data() + n;
    Py_ssize_t refused = -1;
    bool bad_range = false;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t j = 0; j < k; ++j) {
        int64_t i = indexed ? load_index(index, j) : j;
        if (i < 0 || i >= tokens) {
            bad_range = true;
            refused = j;
            break;
        }
        int64_t a = load_index(start, i), b = load_index(end, i);
        if (a < 0 || b < a || b > n) {
            bad_range = true;
            refused = j;
            break;
        }
        if (!convert(buf.data() + a, buf.data() + b, out, j)) {
            refused = j;
            break;
        }
    }
    Py_END_ALLOW_THREADS;
    if (bad_range) {
        PyErr_Format(PyExc_IndexError, "token %zd is not a range inside the buffer", refused);
        return nullptr;
    }
    return PyLong_FromSsize_t(refused);
}

inline bool float_into(const unsigned char* p, const unsigned char* q, View& out, Py_ssize_t j) {
    return parse_float(reinterpret_cast<const char*>(p), reinterpret_cast<const char*>(q),
                       static_cast<double*>(out.b.buf) + j);
}

inline bool int_into(const unsigned char* p, const unsigned char* q, View& out, Py_ssize_t j) {
    return parse_int(p, q, static_cast<int64_t*>(out.b.buf) + j);
}

// A token's first 8 bytes as a little-endian uint64, zero padded; all ones for a longer token
// (text.keys' convention: never equal to a keyword's key).
inline bool key_into(const unsigned char* p, const unsigned char* q, View& out, Py_ssize_t j) {
    uint64_t k = ~uint64_t{0};
    Py_ssize_t len = q - p;
    if (len <= 8) {
        const unsigned char* stop = static_cast<const unsigned char*>(out.limit);
        if (stop - p >= 8) {  // 8 bytes readable: one load, the bytes past the token masked off
            std::memcpy(&k, p, 8);
            if (len < 8) k &= (uint64_t{1} << (8 * len)) - 1;
        } else {
            k = 0;
            for (Py_ssize_t i = 0; i < len; ++i) k |= static_cast<uint64_t>(p[i]) << (8 * i);
        }
    }
    static_cast<uint64_t*>(out.b.buf)[j] = k;
    return true;
}

PyObject* floats(PyObject*, PyObject* args) { return ranges(args, "d", float_into); }
PyObject* keys(PyObject*, PyObject* args) { return ranges(args, "Q", key_into); }
PyObject* integers(PyObject*, PyObject* args) { return ranges(args, "q", int_into); }

// Every token of buf converted into out while it has room; returns (tokens, refused): the token
// count (counting stops at len(out) + 1: "more than out holds") and the index of the first token
// refused (-1 if none; conversion stops there).
template <typename Convert>
PyObject* scan(PyObject* args, const char* out_kind, Convert convert) {
    PyObject *o, *oo;
    if (!PyArg_ParseTuple(args, "OO", &o, &oo)) return nullptr;
    View buf, out;
    if (!get_bytes(o, buf) || !get_array(oo, out, true, out_kind, "out")) return nullptr;
    const unsigned char* d = buf.data();
    Py_ssize_t n = buf.size(), cap = items(out), t = 0, refused = -1;
    Py_BEGIN_ALLOW_THREADS;
    each_token(d, n, '\n', [&](Py_ssize_t a, Py_ssize_t b, int64_t) {
        if (t == cap) {
            ++t;  // one more than out holds: the caller's count is wrong
            return false;
        }
        if (!convert(d + a, d + b, out, t)) {
            refused = t;
            return false;
        }
        ++t;
        return true;
    });
    Py_END_ALLOW_THREADS;
    return Py_BuildValue("nn", t, refused);
}

PyObject* scan_floats(PyObject*, PyObject* args) { return scan(args, "d", float_into); }
PyObject* scan_integers(PyObject*, PyObject* args) { return scan(args, "q", int_into); }

inline uint64_t mix(uint64_t h) {
    h ^= h >> 32;
    h *= 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
    return h;
}

// A 64-bit hash of bytes [p, q): 8 bytes a step, multiply-xorshift rounds.
inline uint64_t hash_bytes(const unsigned char* p, const unsigned char* q) {
    uint64_t h = 0xBF58476D1CE4E5B9ull ^ static_cast<uint64_t>(q - p);
    while (q - p >= 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        h = mix(h ^ w) * 0x94D049BB133111EBull;
        p += 8;
    }
    uint64_t w = 0;
    std::memcpy(&w, p, static_cast<size_t>(q - p));
    return mix(mix(h ^ w) * 0x94D049BB133111EBull);
}

// first_equal(buf, start, end, out) -> bool: out[j] = the smallest i whose bytes equal range j's.
// An open-addressing table of 2^ceil(log2(2k)) 8-byte slots (hash tag, index): memory <= 32 bytes
// a range. Bounded whatever the input: at most 8k + 64 probes and 2 x (bytes in all ranges) + 64k
// bytes compared, else False (out unspecified) and the caller takes a path without it.
// Whether two buffers' bytes overlap.
bool overlaps(const Py_buffer& x, const Py_buffer& y) {
    const char *a = static_cast<const char*>(x.buf), *b = static_cast<const char*>(y.buf);
    return x.len > 0 && y.len > 0 && a < b + y.len && b < a + x.len;
}

PyObject* first_equal(PyObject*, PyObject* args) {
    PyObject *o, *so, *eo, *oo;
    if (!PyArg_ParseTuple(args, "OOOO", &o, &so, &eo, &oo)) return nullptr;
    View buf, start, end, out;
    if (!get_bytes(o, buf) || !get_array(so, start, false, "iq", "start") || !get_array(eo, end, false, "iq", "end") ||
        !get_array(oo, out, true, "iq", "out"))
        return nullptr;
    Py_ssize_t k = items(start);
    if (items(end) != k || items(out) != k) {
        PyErr_SetString(PyExc_ValueError, "start, end and out must have the same length");
        return nullptr;
    }
    if (k >= (int64_t{1} << 31)) Py_RETURN_FALSE;  // the slots hold 32-bit indices
    // out is written while start and end are read again: an out sharing their memory would turn
    // the indices written into byte offsets never checked (reads past the buffer).
    if (overlaps(out.b, start.b) || overlaps(out.b, end.b)) {
        PyErr_SetString(PyExc_ValueError, "out must not share memory with start or end");
        return nullptr;
    }
    const int64_t n = buf.size();
    for (Py_ssize_t j = 0; j < k; ++j) {  // all ranges checked before any is read
        int64_t a = load_index(start, j), b = load_index(end, j);
        if (a < 0 || b < a || b > n) {
            PyErr_Format(PyExc_IndexError, "range %zd is not inside the buffer", j);
            return nullptr;
        }
    }
    int bits = 1;
    while ((int64_t{1} << bits) < 2 * k) ++bits;
    const uint64_t mask = (uint64_t{1} << bits) - 1;
    uint64_t* slots = static_cast<uint64_t*>(PyMem_RawCalloc(static_cast<size_t>(mask + 1), sizeof(uint64_t)));
    if (slots == nullptr) return PyErr_NoMemory();
    bool ok = true, moved = false;
    // Every range is checked again where it is read without the GIL: another thread may change
    // start or end meanwhile (a numpy array is writable), and nothing must then be read outside
    // the buffer (the call raises instead).
    auto inside = [n, &ok, &moved](int64_t a, int64_t b) {
        if (a >= 0 && a <= b && b <= n) return true;
        ok = false;
        moved = true;
        return false;
    };
    Py_BEGIN_ALLOW_THREADS;
    const unsigned char* d = buf.data();
    int64_t probes = 8 * static_cast<int64_t>(k) + 64, compared = 64 * static_cast<int64_t>(k);
    for (Py_ssize_t j = 0; j < k; ++j) compared += 2 * (load_index(end, j) - load_index(start, j));
    constexpr Py_ssize_t kBatch = 16;  // hashes computed and their slots prefetched ahead
    uint64_t hashes[kBatch];
    for (Py_ssize_t j = 0; j < k && ok; ++j) {
        if (j % kBatch == 0) {
            for (Py_ssize_t u = j; u < j + kBatch && u < k; ++u) {
                int64_t ua = load_index(start, u), ub = load_index(end, u);
                if (!inside(ua, ub)) break;
                hashes[u - j] = hash_bytes(d + ua, d + ub);
                __builtin_prefetch(slots + (hashes[u - j] & mask));
            }
        }
        int64_t a = load_index(start, j), b = load_index(end, j);
        if (!ok || !inside(a, b)) break;
        uint64_t h = hashes[j % kBatch];
        uint64_t tag = (h >> 32) | 1;  // never 0: 0 is an empty slot
        int64_t found = j;
        for (uint64_t pos = h & mask;; pos = (pos + 1) & mask) {
            if (--probes < 0) {
                ok = false;
                break;
            }
            uint64_t slot = slots[pos];
            if (slot == 0) {
                slots[pos] = (tag << 32) | static_cast<uint64_t>(j);
                break;
            }
            if ((slot >> 32) != tag) continue;
            int64_t i = static_cast<int64_t>(slot & 0xFFFFFFFFull);
            int64_t ia = load_index(start, i), ib = load_index(end, i);
            if (!inside(ia, ib)) break;
            if (ib - ia != b - a) continue;
            compared -= b - a;
            if (compared < 0) {
                ok = false;
                break;
            }
            if (std::memcmp(d + ia, d + a, static_cast<size_t>(b - a)) == 0) {
                found = i;
                break;
            }
        }
        store_index(out, j, found);
    }
    Py_END_ALLOW_THREADS;
    PyMem_RawFree(slots);
    if (moved) {
        PyErr_SetString(PyExc_ValueError, "start or end changed during first_equal");
        return nullptr;
    }
    return PyBool_FromLong(ok);
}

// ---- binary STL: one pass over the 50-byte records ------------------------------------------
//
// stl_binary(buf, n, faces, first, keep, tolerance, probes, seed) -> (distinct, foreign, tagged)
// or None. Record r is 50 bytes at 84 + 50 r: normal (3 float32), 3 corners (3 float32 each),
// 2 attribute bytes, all little-endian. In one pass, per record:
//   - each corner welded by its 12 bytes (exact: -0.0 and 0.0, NaN payloads stay apart): faces[3r + c]
//     = the rank of the corner's bytes in order of first appearance (stl.merge_exact's answer),
//     first[rank] = the corner index (3r + c) where those bytes first appear;
//   - foreign: the stored normal neither all zero nor within `tolerance` per component of the
//     geometric one (stl._normal_columns / _foreign_count's float64 arithmetic, step for step);
//   - keep[r] = the face is not degenerate (validate._non_degenerate's float64 arithmetic: three
//     distinct ranks and a cross product that is not exactly zero);
//   - tagged: attribute bytes not zero.
// The weld is an open-addressing table of 16-byte slots (the 12 key bytes and rank + 1; 0: empty),
// linear probing, a 64-bit multiply-fold hash keyed by a per-call random seed (a file cannot be
// crafted against a seed it does not know; `seed` nonzero: that seed, for tests). It starts at
// 2^ceil(log2(3n / 2)) slots (>= 64) and doubles when half full, so at most 2^ceil(log2(6n))
// slots: memory <= 64 bytes a corner, 96 while the last doubling copies (all corners distinct:
// up to ~4x, briefly ~6x the file's 16.7 bytes a corner; ~8-16 bytes a corner, ~0.5-1x the
// file, for a closed mesh, whose corners repeat ~6 times), plus the callers' arrays. Time O(n): at most
// probes x 3n + 64 probes in all, rehashing included, else None (the outputs unspecified) and
// the caller takes its exact path (stl._weld_binary, merge_exact). Each probe compares 12 bytes.
// Not built on big-endian hosts (None: the Python path).
//
// stl_vertices(buf, n, first, out) -> nonfinite: out (len(first), 3) float64 of the corners
// first[i] of the n records (float32 -> float64, exact; NaN as a float cast quiets it, as numpy's
// astype); returns how many rows hold a NaN or an infinity.

// The float arithmetic below must be IEEE operation by operation (numpy's): no fused multiply-add
// (which x86-64's baseline lacks anyway, but aarch64 and -march=native builds have).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

// W 32-bit words of key (3: a float32 corner, 6: a float64 row) and rank + 1 (0: empty).
template <int W>
struct Slot {
    uint32_t key[W];
    uint32_t id;
};

inline uint64_t fold_mul(uint64_t a, uint64_t b) {
    __uint128_t p = static_cast<__uint128_t>(a) * b;
    return static_cast<uint64_t>(p) ^ static_cast<uint64_t>(p >> 64);
}

template <int W>
struct KeyHash {
    uint64_t s0, s1, s2;
    uint64_t operator()(const uint32_t* key) const {
        uint64_t h = s2;
        for (int i = 0; i + 2 <= W; i += 2) {
            uint64_t w = static_cast<uint64_t>(key[i]) | static_cast<uint64_t>(key[i + 1]) << 32;
            h = fold_mul(w ^ s0, h ^ s1);
        }
        if (W % 2) h = fold_mul(static_cast<uint64_t>(key[W - 1]) ^ s0, h ^ s1);
        return fold_mul(h ^ s2, 0x9E3779B97F4A7C15ull);
    }
};

inline uint64_t splitmix(uint64_t& x) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// A seed no file can know in advance: the clock, this call's stack address and a call counter.
uint64_t fresh_seed() {
    static uint64_t calls = 0;
    int here = 0;
    uint64_t x = static_cast<uint64_t>(std::chrono::high_resolution_clock::now().time_since_epoch().count()) ^
                 reinterpret_cast<uintptr_t>(&here) ^ (++calls << 48);
    return splitmix(x);
}

template <int W>
class KeyTable {
   public:
    // probes: the budget of probes in all; cap_max: the most slots it grows to.
    KeyTable(uint64_t seed, int64_t probes, uint64_t cap_max) : budget_(probes), cap_max_(cap_max) {
        hash_ = {splitmix(seed), splitmix(seed) | 1, splitmix(seed)};
    }
    ~KeyTable() { PyMem_RawFree(slots_); }
    KeyTable(const KeyTable&) = delete;
    KeyTable& operator=(const KeyTable&) = delete;
    bool reserve(uint64_t cap) {
        auto* s = static_cast<Slot<W>*>(PyMem_RawCalloc(static_cast<size_t>(cap), sizeof(Slot<W>)));
        if (s == nullptr) return false;
        slots_ = s;
        mask_ = cap - 1;
        return true;
    }
    uint64_t hash(const uint32_t* key) const { return hash_(key); }
    void prefetch(uint64_t h) const { __builtin_prefetch(slots_ + (h & mask_)); }
    // The rank of key (inserted with rank `fresh` if new: *added set); -1 when the budget is
    // spent, -2 when memory ran out (growing).
    int64_t find_or_add(const uint32_t* key, uint64_t h, uint32_t fresh, bool* added) {
        *added = false;
        for (uint64_t pos = h & mask_;; pos = (pos + 1) & mask_) {
            if (--budget_ < 0) return -1;
            Slot<W>& s = slots_[pos];
            if (s.id == 0) {
                std::memcpy(s.key, key, 4 * W);
                s.id = fresh + 1;
                *added = true;
                if (2 * (static_cast<uint64_t>(fresh) + 1) > mask_ + 1 && (mask_ + 1) < cap_max_) {
                    int g = grow();
                    if (g < 0) return g;
                }
                return fresh;
            }
            if (std::memcmp(s.key, key, 4 * W) == 0) return s.id - 1;
        }
    }

   private:
    // Doubles the table (probes counted against the budget): 0, or -1 / -2 as find_or_add.
    int grow() {
        Slot<W>* old = slots_;
        uint64_t old_cap = mask_ + 1;
        if (!reserve(2 * old_cap)) {
            slots_ = old;
            return -2;
        }
        for (uint64_t i = 0; i < old_cap; ++i) {
            if (old[i].id == 0) continue;
            for (uint64_t pos = hash_(old[i].key) & mask_;; pos = (pos + 1) & mask_) {
                if (--budget_ < 0) {
                    PyMem_RawFree(old);
                    return -1;
                }
                if (slots_[pos].id == 0) {
                    slots_[pos] = old[i];
                    break;
                }
            }
        }
        PyMem_RawFree(old);
        return 0;
    }
    KeyHash<W> hash_{};
    Slot<W>* slots_ = nullptr;
    uint64_t mask_ = 0;
    int64_t budget_;
    uint64_t cap_max_;
};

// stl._foreign_count and validate._non_degenerate for one face of float64 corners a, b, c and
// stored normal s, operation by operation as numpy does them: u = b - a, w = c - a, the cross
// product's six products, its length sqrt((x x + y y) + z z); foreign: s is not all zero and some
// |s - g| is not <= tolerance (NaN: not), g = cross / length where length > 0, else 0; flat: the
// cross product's two terms equal in all three components (validate's zero-area test).
struct FaceVerdict {
    bool foreign, flat;
};

inline FaceVerdict check_face(const double* a, const double* b, const double* c, const double* s, double tolerance) {
    double u[3], w[3];
    for (int d = 0; d < 3; ++d) {
        u[d] = b[d] - a[d];
        w[d] = c[d] - a[d];
    }
    const double p12 = u[1] * w[2], p21 = u[2] * w[1], p20 = u[2] * w[0], p02 = u[0] * w[2], p01 = u[0] * w[1],
                 p10 = u[1] * w[0];
    const double cross[3] = {p12 - p21, p20 - p02, p01 - p10};
    const double length = std::sqrt(cross[0] * cross[0] + cross[1] * cross[1] + cross[2] * cross[2]);
    const bool solid = length > 0;
    bool far = false, zero = true;
    for (int d = 0; d < 3; ++d) {
        double g = solid ? cross[d] / length : 0.0;
        far |= !(std::fabs(s[d] - g) <= tolerance);  // NaN: far
        zero &= s[d] == 0;
    }
    return {far && !zero, (p12 == p21) && (p20 == p02) && (p01 == p10)};
}

inline uint64_t pow2_at_least(uint64_t x) {
    uint64_t p = 64;
    while (p < x) p *= 2;
    return p;
}

inline float f32(const unsigned char* p) {
    float x;
    std::memcpy(&x, p, 4);
    return x;
}

PyObject* stl_binary(PyObject*, PyObject* args) {
    PyObject *o, *fo, *io, *ko;
    Py_ssize_t n;
    double tolerance;
    double probes_per_corner;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "OnOOOddK", &o, &n, &fo, &io, &ko, &tolerance, &probes_per_corner, &seed))
        return nullptr;
    View buf, faces, first, keep;
    if (!get_bytes(o, buf) || !get_array(fo, faces, true, "iq", "faces") ||
        !get_array(io, first, true, "iq", "first") || !get_array(ko, keep, true, "B", "keep"))
        return nullptr;
    if (n < 0 || n > (PY_SSIZE_T_MAX - 84) / 50 || 84 + 50 * n > buf.size()) {
        PyErr_SetString(PyExc_ValueError, "the buffer does not hold n records after the 84-byte header");
        return nullptr;
    }
    if (items(faces) != 3 * n || items(first) != 3 * n || items(keep) != n) {
        PyErr_SetString(PyExc_ValueError, "faces and first must hold 3n items, keep n");
        return nullptr;
    }
    if (overlaps(buf.b, faces.b) || overlaps(buf.b, first.b) || overlaps(buf.b, keep.b) ||
        overlaps(faces.b, first.b) || overlaps(faces.b, keep.b) || overlaps(first.b, keep.b)) {
        PyErr_SetString(PyExc_ValueError, "buf, faces, first and keep must not share memory");
        return nullptr;
    }
    if (!(probes_per_corner >= 0 && probes_per_corner <= 64)) {
        PyErr_SetString(PyExc_ValueError, "probes must be in [0, 64]");
        return nullptr;
    }
    const int64_t k = 3 * static_cast<int64_t>(n);
    const int64_t index_max = first.b.itemsize == 4 || faces.b.itemsize == 4 ? INT32_MAX : INT64_MAX;
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    Py_RETURN_NONE;  // the records are little-endian: the Python path reads them
#endif
    if (k >= index_max || k >= (int64_t{1} << 32) - 1) Py_RETURN_NONE;  // ranks are 32-bit in the table
    KeyTable<3> table(seed ? seed : fresh_seed(), static_cast<int64_t>(probes_per_corner * static_cast<double>(k)) + 64,
                      pow2_at_least(2 * static_cast<uint64_t>(k)));
    if (!table.reserve(pow2_at_least(static_cast<uint64_t>(k) / 2))) return PyErr_NoMemory();
    int64_t distinct = 0, foreign = 0, tagged = 0, failed = 0;
    Py_BEGIN_ALLOW_THREADS;
    const unsigned char* rec0 = buf.data() + 84;
    uint8_t* kp = static_cast<uint8_t*>(keep.b.buf);
    constexpr int64_t kBatch = 8;  // records whose slots are prefetched ahead
    uint64_t hashes[3 * kBatch];
    for (int64_t r = 0; r < n && !failed; ++r) {
        if (r % kBatch == 0) {
            for (int64_t u = r; u < r + kBatch && u < n; ++u) {
                for (int c = 0; c < 3; ++c) {
                    uint32_t key[3];
                    std::memcpy(key, rec0 + 50 * u + 12 + 12 * c, 12);
                    uint64_t h = table.hash(key);
                    hashes[3 * (u - r) + c] = h;
                    table.prefetch(h);
                }
            }
        }
        const unsigned char* p = rec0 + 50 * r;
        int64_t rank[3];
        for (int c = 0; c < 3; ++c) {
            uint32_t key[3];
            std::memcpy(key, p + 12 + 12 * c, 12);
            bool added;
            int64_t got = table.find_or_add(key, hashes[3 * (r % kBatch) + c], static_cast<uint32_t>(distinct), &added);
            if (got < 0) {
                failed = got;
                break;
            }
            if (added) store_index(first, distinct++, 3 * r + c);
            rank[c] = got;
            store_index(faces, 3 * r + c, got);
        }
        if (failed) break;
        double corner[3][3], stored[3];
        for (int d = 0; d < 3; ++d) {
            stored[d] = static_cast<double>(f32(p + 4 * d));
            for (int c = 0; c < 3; ++c) corner[c][d] = static_cast<double>(f32(p + 12 + 12 * c + 4 * d));
        }
        const FaceVerdict verdict = check_face(corner[0], corner[1], corner[2], stored, tolerance);
        foreign += verdict.foreign;
        kp[r] = rank[0] != rank[1] && rank[1] != rank[2] && rank[0] != rank[2] && !verdict.flat;
        uint16_t attr;
        std::memcpy(&attr, p + 48, 2);
        tagged += attr != 0;
    }
    Py_END_ALLOW_THREADS;
    if (failed == -2) return PyErr_NoMemory();
    if (failed) Py_RETURN_NONE;
    return Py_BuildValue("LLL", static_cast<long long>(distinct), static_cast<long long>(foreign),
                         static_cast<long long>(tagged));
}

PyObject* stl_vertices(PyObject*, PyObject* args) {
    PyObject *o, *io, *oo;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "OnOO", &o, &n, &io, &oo)) return nullptr;
    View buf, first, out;
    if (!get_bytes(o, buf) || !get_array(io, first, false, "iq", "first") || !get_array(oo, out, true, "d", "out"))
        return nullptr;
    if (n < 0 || n > (PY_SSIZE_T_MAX - 84) / 50 || 84 + 50 * n > buf.size()) {
        PyErr_SetString(PyExc_ValueError, "the buffer does not hold n records after the 84-byte header");
        return nullptr;
    }
    const Py_ssize_t m = items(first);
    if (items(out) != 3 * m) {
        PyErr_SetString(PyExc_ValueError, "out must hold 3 values a corner of first");
        return nullptr;
    }
    if (overlaps(out.b, first.b) || overlaps(out.b, buf.b)) {
        PyErr_SetString(PyExc_ValueError, "out must not share memory with buf or first");
        return nullptr;
    }
    const int64_t k = 3 * static_cast<int64_t>(n);
    Py_ssize_t bad = -1, nonfinite = 0;
    Py_BEGIN_ALLOW_THREADS;
    const unsigned char* rec0 = buf.data() + 84;
    double* v = static_cast<double*>(out.b.buf);
    for (Py_ssize_t i = 0; i < m; ++i) {
        int64_t c = load_index(first, i);  // checked here: another thread may change `first`
        if (c < 0 || c >= k) {
            bad = i;
            break;
        }
        const unsigned char* p = rec0 + 50 * (c / 3) + 12 + 12 * (c % 3);
        bool finite = true;
        for (int d = 0; d < 3; ++d) {
            double x = static_cast<double>(f32(p + 4 * d));
            finite &= std::isfinite(x);
            v[3 * i + d] = x;
        }
        nonfinite += !finite;
    }
    Py_END_ALLOW_THREADS;
    if (bad >= 0) {
        PyErr_Format(PyExc_IndexError, "first[%zd] is not a corner of the n records", bad);
        return nullptr;
    }
    return PyLong_FromSsize_t(nonfinite);
}

// stl_write(vertices, faces) -> bytes or None: the binary STL of a mesh (80 zero bytes, the
// uint32 face count, one 50-byte record a face: the geometric normal as float32, the 3 corners as
// float32, zero attribute bytes), stl._write_binary's bytes: the normal in float64 by
// _normal_columns' arithmetic (u = b - a, w = c - a, u x w over its length, zero where the length
// is not > 0), then rounded to float32 as numpy's astype rounds. vertices: (N, 3) float64, faces
// (M, 3) int64, both contiguous. None (nothing written) when a face index is outside [0, N) or
// M is over the format's uint32 count: the caller's numpy path then decides. Time O(M); memory
// the output (50 bytes a face).
PyObject* stl_write(PyObject*, PyObject* args) {
    PyObject *vo, *fo;
    if (!PyArg_ParseTuple(args, "OO", &vo, &fo)) return nullptr;
    View vertices, faces;
    if (!get_array(vo, vertices, false, "d", "vertices") || !get_array(fo, faces, false, "q", "faces")) return nullptr;
    if (items(vertices) % 3 != 0 || items(faces) % 3 != 0) {
        PyErr_SetString(PyExc_ValueError, "vertices and faces must hold 3 items a row");
        return nullptr;
    }
    const int64_t nv = items(vertices) / 3, m = items(faces) / 3;
    if (m > UINT32_MAX || m > (PY_SSIZE_T_MAX - 84) / 50) Py_RETURN_NONE;
    PyObject* out = PyBytes_FromStringAndSize(nullptr, 84 + 50 * static_cast<Py_ssize_t>(m));
    if (out == nullptr) return nullptr;
    unsigned char* o = reinterpret_cast<unsigned char*>(PyBytes_AS_STRING(out));
    bool in_range = true;
    Py_BEGIN_ALLOW_THREADS;  // `out` is not shared until returned
    std::memset(o, 0, 80);
    const uint32_t count = static_cast<uint32_t>(m);
    std::memcpy(o + 80, &count, 4);
    const double* v = static_cast<const double*>(vertices.b.buf);
    const int64_t* f = static_cast<const int64_t*>(faces.b.buf);
    for (int64_t r = 0; r < m; ++r) {
        const int64_t i0 = f[3 * r], i1 = f[3 * r + 1], i2 = f[3 * r + 2];
        if (i0 < 0 || i0 >= nv || i1 < 0 || i1 >= nv || i2 < 0 || i2 >= nv) {
            in_range = false;
            break;
        }
        const double *a = v + 3 * i0, *b = v + 3 * i1, *c = v + 3 * i2;
        double u[3], w[3];
        for (int d = 0; d < 3; ++d) {
            u[d] = b[d] - a[d];
            w[d] = c[d] - a[d];
        }
        const double cross[3] = {u[1] * w[2] - u[2] * w[1], u[2] * w[0] - u[0] * w[2], u[0] * w[1] - u[1] * w[0]};
        const double length = std::sqrt(cross[0] * cross[0] + cross[1] * cross[1] + cross[2] * cross[2]);
        const bool solid = length > 0;
        float rec[12];
        for (int d = 0; d < 3; ++d) {
            rec[d] = static_cast<float>(solid ? cross[d] / length : 0.0);
            rec[3 + d] = static_cast<float>(a[d]);
            rec[6 + d] = static_cast<float>(b[d]);
            rec[9 + d] = static_cast<float>(c[d]);
        }
        unsigned char* p = o + 84 + 50 * r;
        std::memcpy(p, rec, 48);
        p[48] = p[49] = 0;
    }
    Py_END_ALLOW_THREADS;
    if (!in_range) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return out;
}

// weld_rows(rows, ranks, first, probes, seed[, initial]) -> distinct or None: stl.merge_exact of
// k float64 rows of 3 (bitwise: -0.0 and 0.0, NaN payloads apart) by KeyTable<6>: ranks[j] = the
// rank of row j's bytes in order of first appearance, first[r] = the row where rank r first
// appears. The table starts at 2^ceil(log2(initial x k)) slots of 28 bytes (initial 2, the
// default: rows mostly distinct, as ASCII STL's text-welded corners are, never grows; 0: 64 slots,
// doubling) and grows to at most 2^ceil(log2(2k)): <= ~112 bytes a row. Time O(k): at most
// probes x k + 64 probes, else None (the caller's merge_exact).
PyObject* weld_rows(PyObject*, PyObject* args) {
    PyObject *ro, *ko, *fo;
    double probes_per_row;
    unsigned long long seed;
    unsigned long long initial_slots = 2;
    if (!PyArg_ParseTuple(args, "OOOdK|K", &ro, &ko, &fo, &probes_per_row, &seed, &initial_slots)) return nullptr;
    View rows, ranks, first;
    if (!get_array(ro, rows, false, "d", "rows") || !get_array(ko, ranks, true, "iq", "ranks") ||
        !get_array(fo, first, true, "iq", "first"))
        return nullptr;
    const Py_ssize_t k = items(rows) / 3;
    if (items(rows) != 3 * k || items(ranks) != k || items(first) != k) {
        PyErr_SetString(PyExc_ValueError, "rows must hold 3 values a row, ranks and first one item a row");
        return nullptr;
    }
    if (overlaps(rows.b, ranks.b) || overlaps(rows.b, first.b) || overlaps(ranks.b, first.b)) {
        PyErr_SetString(PyExc_ValueError, "rows, ranks and first must not share memory");
        return nullptr;
    }
    if (!(probes_per_row >= 0 && probes_per_row <= 64) || initial_slots > 2) {
        PyErr_SetString(PyExc_ValueError, "probes must be in [0, 64], initial in [0, 2]");
        return nullptr;
    }
    const int64_t index_max = ranks.b.itemsize == 4 || first.b.itemsize == 4 ? INT32_MAX : INT64_MAX;
    if (k >= index_max || k >= (int64_t{1} << 32) - 1) Py_RETURN_NONE;
    KeyTable<6> table(seed ? seed : fresh_seed(), static_cast<int64_t>(probes_per_row * static_cast<double>(k)) + 64,
                      pow2_at_least(2 * static_cast<uint64_t>(k)));
    if (!table.reserve(pow2_at_least(static_cast<uint64_t>(k) * initial_slots))) return PyErr_NoMemory();
    int64_t distinct = 0, failed = 0;
    Py_BEGIN_ALLOW_THREADS;
    const unsigned char* base = static_cast<const unsigned char*>(rows.b.buf);
    constexpr Py_ssize_t kBatch = 16;
    uint64_t hashes[kBatch];
    for (Py_ssize_t j = 0; j < k; ++j) {
        if (j % kBatch == 0) {
            for (Py_ssize_t u = j; u < j + kBatch && u < k; ++u) {
                uint32_t key[6];
                std::memcpy(key, base + 24 * u, 24);
                hashes[u - j] = table.hash(key);
                table.prefetch(hashes[u - j]);
            }
        }
        uint32_t key[6];
        std::memcpy(key, base + 24 * j, 24);
        bool added;
        int64_t got = table.find_or_add(key, hashes[j % kBatch], static_cast<uint32_t>(distinct), &added);
        if (got < 0) {
            failed = got;
            break;
        }
        if (added) store_index(first, distinct++, j);
        store_index(ranks, j, got);
    }
    Py_END_ALLOW_THREADS;
    if (failed == -2) return PyErr_NoMemory();
    if (failed) Py_RETURN_NONE;
    return PyLong_FromLongLong(distinct);
}

// face_checks(vertices, faces, normals, tolerance, keep) -> foreign or None: check_face over
// (M, 3) int64 faces of (N, 3) float64 vertices with (M, 3) float64 stored normals: keep[r] =
// validate._non_degenerate, the count of foreign normals (stl._foreign_count). None (keep
// unspecified) when a face index is outside [0, N): the caller's numpy path. Time O(M), no memory.
PyObject* face_checks(PyObject*, PyObject* args) {
    PyObject *vo, *fo, *no, *ko;
    double tolerance;
    if (!PyArg_ParseTuple(args, "OOOdO", &vo, &fo, &no, &tolerance, &ko)) return nullptr;
    View vertices, faces, normals, keep;
    if (!get_array(vo, vertices, false, "d", "vertices") || !get_array(fo, faces, false, "q", "faces") ||
        !get_array(no, normals, false, "d", "normals") || !get_array(ko, keep, true, "B", "keep"))
        return nullptr;
    const Py_ssize_t nv = items(vertices) / 3, m = items(keep);
    if (items(vertices) != 3 * nv || items(faces) != 3 * m || items(normals) != 3 * m) {
        PyErr_SetString(PyExc_ValueError, "vertices, faces and normals must hold 3 items a row, one face a keep");
        return nullptr;
    }
    if (overlaps(keep.b, vertices.b) || overlaps(keep.b, faces.b) || overlaps(keep.b, normals.b)) {
        PyErr_SetString(PyExc_ValueError, "keep must not share memory with the inputs");
        return nullptr;
    }
    int64_t foreign = 0;
    bool in_range = true;
    Py_BEGIN_ALLOW_THREADS;
    const double* v = static_cast<const double*>(vertices.b.buf);
    const int64_t* f = static_cast<const int64_t*>(faces.b.buf);
    const double* s = static_cast<const double*>(normals.b.buf);
    uint8_t* kp = static_cast<uint8_t*>(keep.b.buf);
    for (Py_ssize_t r = 0; r < m; ++r) {
        const int64_t i = f[3 * r], j = f[3 * r + 1], l = f[3 * r + 2];
        if (i < 0 || i >= nv || j < 0 || j >= nv || l < 0 || l >= nv) {
            in_range = false;
            break;
        }
        const FaceVerdict verdict = check_face(v + 3 * i, v + 3 * j, v + 3 * l, s + 3 * r, tolerance);
        foreign += verdict.foreign;
        kp[r] = i != j && j != l && i != l && !verdict.flat;
    }
    Py_END_ALLOW_THREADS;
    if (!in_range) Py_RETURN_NONE;
    return PyLong_FromLongLong(foreign);
}

#if !defined(__clang__) && defined(__GNUC__)
#pragma GCC pop_options
#endif

// nth_byte(buf, byte, r) -> the offset of the r-th (1-based) occurrence of byte, or -1 when buf
// holds fewer (memchr from one to the next: O(n)).
PyObject* nth_byte(PyObject*, PyObject* args) {
    PyObject* o;
    int byte;
    Py_ssize_t r;
    if (!PyArg_ParseTuple(args, "Oin", &o, &byte, &r)) return nullptr;
    if (byte < 0 || byte > 255 || r < 1) {
        PyErr_SetString(PyExc_ValueError, "byte must be 0-255 and r >= 1");
        return nullptr;
    }
    View buf;
    if (!get_bytes(o, buf)) return nullptr;
    const unsigned char* d = buf.data();
    Py_ssize_t n = buf.size(), at = -1;
    Py_BEGIN_ALLOW_THREADS;
    const unsigned char* p = d;
    for (Py_ssize_t found = 0; found < r; ++found) {
        const void* hit = std::memchr(p, byte, static_cast<size_t>(d + n - p));
        if (hit == nullptr) {
            at = -1;
            break;
        }
        at = static_cast<const unsigned char*>(hit) - d;
        p = static_cast<const unsigned char*>(hit) + 1;
    }
    Py_END_ALLOW_THREADS;
    return PyLong_FromSsize_t(at);
}

PyMethodDef methods[] = {
    {"count_tokens", count_tokens, METH_VARARGS, "count_tokens(buf) -> number of whitespace-separated tokens"},
    {"tokenize", tokenize, METH_VARARGS,
     "tokenize(buf, start, end, line_or_None, break_byte) -> tokens written (start/end/line int32 or int64)"},
    {"floats", floats, METH_VARARGS, "floats(buf, start, end, out) -> -1, or the index of the first refused token"},
    {"integers", integers, METH_VARARGS,
     "integers(buf, start, end, out) -> -1, or the index of the first refused token"},
    {"first_equal", first_equal, METH_VARARGS,
     "first_equal(buf, start, end, out) -> bool: out[j] = first range with range j's bytes (False: gave up)"},
    {"nth_byte", nth_byte, METH_VARARGS, "nth_byte(buf, byte, r) -> offset of the r-th occurrence of byte, or -1"},
    {"keys", keys, METH_VARARGS, "keys(buf, start, end, out_uint64) -> -1 (each token's first 8 bytes, text.keys)"},
    {"scan_floats", scan_floats, METH_VARARGS, "scan_floats(buf, out) -> (tokens, first refused or -1)"},
    {"scan_integers", scan_integers, METH_VARARGS, "scan_integers(buf, out) -> (tokens, first refused or -1)"},
    {"stl_binary", stl_binary, METH_VARARGS,
     "stl_binary(buf, n, faces, first, keep, tolerance, probes, seed) -> (distinct, foreign, tagged) or None"},
    {"stl_vertices", stl_vertices, METH_VARARGS,
     "stl_vertices(buf, n, first, out) -> rows holding NaN or inf (float64 of the corners first)"},
    {"stl_write", stl_write, METH_VARARGS, "stl_write(vertices, faces) -> binary STL bytes, or None (an index out of range)"},
    {"weld_rows", weld_rows, METH_VARARGS,
     "weld_rows(rows, ranks, first, probes, seed[, initial]) -> distinct or None (merge_exact of float64 rows of 3)"},
    {"face_checks", face_checks, METH_VARARGS,
     "face_checks(vertices, faces, normals, tolerance, keep) -> foreign normals, or None (an index out of range)"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_textscan", "Byte scanning for the text mesh readers (GIL released).",
                      -1, methods, nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__textscan(void) { return PyModule_Create(&module); }
