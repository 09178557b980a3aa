/* The inner loops of the near-duplicate lookup (index.py), compiled.
 *
 * What a lookup at a million files costs is memory latency: each of the
 * 7,276 buckets a lookup visits in the pHash table is a run of about 15
 * entries somewhere in 32 MiB, one or two cache misses, and numpy reads
 * them one after another. These loops read the same layout, with the same
 * tests, but ask for each bucket's cache lines several buckets ahead of
 * the one being tested (a software prefetch), so that the misses overlap
 * instead of queueing. On the pHash table of a million files, testing the
 * entries of a lookup's 17 probes took 0.35 ms of CPU with the prefetch,
 * 0.90 ms without it and 1.5 ms in numpy; a whole lookup in the ingest of
 * a million-file store 0.5 ms against 1.8 ms (docs/benchmarks.md).
 *
 * Arrays come in through the buffer protocol (no numpy headers at build
 * time), are checked against their lengths before every read, and are
 * never written. The GIL is released while the loops run. index.py keeps
 * a numpy path with the same answers for where this module is not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define NEAR_X86 1
#define NEAR_POPCNT __attribute__((target("popcnt")))
#else
#define NEAR_X86 0
#define NEAR_POPCNT
#endif

#if defined(__GNUC__)
#define NEAR_INLINE static inline __attribute__((always_inline))
#define PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)
#define POPCOUNT(x) __builtin_popcountll(x)
#else
#define NEAR_INLINE static inline
#define PREFETCH(p) ((void)0)
static int POPCOUNT(uint64_t x) {
    int n = 0;
    for (; x; x &= x - 1) n++;
    return n;
}
#endif

/* buckets read ahead of the one being tested */
#define AHEAD 8

typedef struct {
    int64_t start, end; /* places in the bucket layout */
    uint64_t key;       /* what the bucket's entries are compared with */
    uint64_t probe;     /* the whole probe, for the exact test after a sketch */
} span_t;

/* A growable array of int64 positions, allocated without the GIL. */
typedef struct {
    int64_t *data;
    Py_ssize_t size, capacity;
} hits_t;

NEAR_INLINE int hits_push(hits_t *h, int64_t v) {
    if (h->size == h->capacity) {
        Py_ssize_t capacity = h->capacity ? 2 * h->capacity : 256;
        int64_t *data = PyMem_RawRealloc(h->data, (size_t)capacity * sizeof(int64_t));
        if (!data) return -1;
        h->data = data;
        h->capacity = capacity;
    }
    h->data[h->size++] = v;
    return 0;
}

/* Prefetch the cache lines of a bucket's entries (at most four). */
NEAR_INLINE void prefetch_span(const char *base, const span_t *s, Py_ssize_t item) {
    const char *p = base + s->start * item, *end = base + s->end * item;
    for (int line = 0; line < 4 && p < end; line++, p += 64) PREFETCH(p);
}

/* Test every entry of every span; 0, -1 when memory ran out, -2 for an
 * entry outside the table (a layout that does not fit its table). Entries
 * are whole hashes (sketch_size 8: the exact test at once) or 32-bit
 * sketches (4: a lower bound, then the exact test on ``hashes``). */
NEAR_INLINE int scan_spans_body(const span_t *spans, Py_ssize_t count, const char *sketch, int sketch_size,
                                const uint32_t *order, const uint64_t *hashes, Py_ssize_t nhashes, const uint8_t *alive,
                                int limit, hits_t *out) {
    for (Py_ssize_t i = 0; i < count; i++) {
        if (i + AHEAD < count) prefetch_span(sketch, &spans[i + AHEAD], sketch_size);
        const span_t *s = &spans[i];
        if (sketch_size == 8) {
            const uint64_t *entries = (const uint64_t *)sketch;
            for (int64_t at = s->start; at < s->end; at++) {
                if (POPCOUNT(entries[at] ^ s->key) <= limit) {
                    uint32_t e = order[at];
                    if (e >= nhashes) return -2;
                    if (alive[e] && hits_push(out, e) < 0) return -1;
                }
            }
        } else {
            const uint32_t *entries = (const uint32_t *)sketch;
            uint32_t key = (uint32_t)s->key;
            for (int64_t at = s->start; at < s->end; at++) {
                if (POPCOUNT((uint64_t)(entries[at] ^ key)) <= limit) {
                    uint32_t e = order[at];
                    if (e >= nhashes) return -2;
                    if (alive[e] && POPCOUNT(hashes[e] ^ s->probe) <= limit && hits_push(out, e) < 0) return -1;
                }
            }
        }
    }
    return 0;
}

static int scan_spans_generic(const span_t *spans, Py_ssize_t count, const char *sketch, int sketch_size,
                              const uint32_t *order, const uint64_t *hashes, Py_ssize_t nhashes, const uint8_t *alive,
                              int limit, hits_t *out) {
    return scan_spans_body(spans, count, sketch, sketch_size, order, hashes, nhashes, alive, limit, out);
}

NEAR_INLINE int linear_body(const uint64_t *hashes, const uint8_t *alive, const uint64_t *probes, Py_ssize_t nprobes,
                            Py_ssize_t start, Py_ssize_t end, int limit, hits_t *out) {
    for (Py_ssize_t e = start; e < end; e++) {
        if (!alive[e]) continue;
        uint64_t h = hashes[e];
        for (Py_ssize_t p = 0; p < nprobes; p++) {
            if (POPCOUNT(h ^ probes[p]) <= limit) {
                if (hits_push(out, e) < 0) return -1;
                break;
            }
        }
    }
    return 0;
}

static int linear_generic(const uint64_t *hashes, const uint8_t *alive, const uint64_t *probes, Py_ssize_t nprobes,
                          Py_ssize_t start, Py_ssize_t end, int limit, hits_t *out) {
    return linear_body(hashes, alive, probes, nprobes, start, end, limit, out);
}

#if NEAR_X86
NEAR_POPCNT static int scan_spans_popcnt(const span_t *spans, Py_ssize_t count, const char *sketch, int sketch_size,
                                         const uint32_t *order, const uint64_t *hashes, Py_ssize_t nhashes,
                                         const uint8_t *alive, int limit, hits_t *out) {
    return scan_spans_body(spans, count, sketch, sketch_size, order, hashes, nhashes, alive, limit, out);
}

NEAR_POPCNT static int linear_popcnt(const uint64_t *hashes, const uint8_t *alive, const uint64_t *probes,
                                     Py_ssize_t nprobes, Py_ssize_t start, Py_ssize_t end, int limit, hits_t *out) {
    return linear_body(hashes, alive, probes, nprobes, start, end, limit, out);
}
#endif

typedef int (*scan_spans_fn)(const span_t *, Py_ssize_t, const char *, int, const uint32_t *, const uint64_t *,
                             Py_ssize_t, const uint8_t *, int, hits_t *);
typedef int (*linear_fn)(const uint64_t *, const uint8_t *, const uint64_t *, Py_ssize_t, Py_ssize_t, Py_ssize_t, int,
                         hits_t *);
static scan_spans_fn scan_spans = scan_spans_generic;
static linear_fn linear = linear_generic;

static PyObject *hits_to_bytes(hits_t *h) {
    PyObject *result = PyBytes_FromStringAndSize((const char *)h->data, h->size * (Py_ssize_t)sizeof(int64_t));
    PyMem_RawFree(h->data);
    return result;
}

static uint64_t sketch_of(uint64_t probe, int64_t shift, int64_t width) {
    int turn = (int)((shift + width) % 64);
    uint64_t turned = turn ? (probe >> turn) | (probe << (64 - turn)) : probe;
    return turned & 0xFFFFFFFFull;
}

PyDoc_STRVAR(near_doc,
             "near(probes, plan, masks, offsets, offset_size, sketch, sketch_size, order, hashes, alive, limit, budget)\n"
             "--\n\n"
             "Positions (int64 bytes) of live entries within ``limit`` bits of a probe, found in the chunk buckets;\n"
             "None when the buckets hold more than ``budget`` entries. ``plan``: per chunk (shift, width, base,\n"
             "first mask, end of its masks), int64.");

static PyObject *near(PyObject *module, PyObject *args) {
    Py_buffer probes_b, plan_b, masks_b, offsets_b, sketch_b, order_b, hashes_b, alive_b;
    int offset_size, sketch_size, limit;
    long long budget;
    (void)module;
    if (!PyArg_ParseTuple(args, "y*y*y*y*iy*iy*y*y*iL", &probes_b, &plan_b, &masks_b, &offsets_b, &offset_size,
                          &sketch_b, &sketch_size, &order_b, &hashes_b, &alive_b, &limit, &budget))
        return NULL;
    PyObject *result = NULL;
    span_t *spans = NULL;
    hits_t out = {NULL, 0, 0};
    const char *problem = NULL;
    int failed = 0;

    const uint64_t *probes = probes_b.buf;
    Py_ssize_t nprobes = probes_b.len / 8;
    const int64_t *plan = plan_b.buf;
    Py_ssize_t nchunks = plan_b.len / (5 * 8);
    const int64_t *masks = masks_b.buf;
    Py_ssize_t nmasks = masks_b.len / 8;
    const char *offsets = offsets_b.buf;
    const char *sketch = sketch_b.buf;
    const uint32_t *order = order_b.buf;
    const uint64_t *hashes = hashes_b.buf;
    const uint8_t *alive = alive_b.buf;
    Py_ssize_t nhashes = hashes_b.len / 8;
    if ((offset_size != 4 && offset_size != 8) || (sketch_size != 4 && sketch_size != 8)) {
        PyErr_SetString(PyExc_ValueError, "offset_size and sketch_size are 4 or 8");
        goto done;
    }
    Py_ssize_t noffsets = offsets_b.len / offset_size;
    Py_ssize_t nsketch = sketch_b.len / sketch_size;
    if (order_b.len / 4 < nsketch || alive_b.len < nhashes) {
        PyErr_SetString(PyExc_ValueError, "order shorter than the sketch, or alive than the hashes");
        goto done;
    }
    Py_ssize_t nspans = 0;
    for (Py_ssize_t c = 0; c < nchunks; c++) {
        const int64_t *chunk = plan + 5 * c;
        /* a chunk's buckets, base + value ^ mask for a value and masks of its width,
         * must all lie inside the offsets, with the end of the last one */
        if (chunk[1] < 1 || chunk[1] > 32 || chunk[0] < 0 || chunk[0] + chunk[1] > 64 || chunk[3] < 0 ||
            chunk[4] < chunk[3] || chunk[4] > nmasks || chunk[2] < 0 ||
            chunk[2] > (int64_t)noffsets - 1 - ((int64_t)1 << chunk[1])) {
            PyErr_SetString(PyExc_ValueError, "a chunk of the plan is out of range");
            goto done;
        }
        Py_ssize_t per_probe = (Py_ssize_t)(chunk[4] - chunk[3]);
        if (per_probe > 0 && nprobes > (PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(span_t) - nspans) / per_probe) {
            PyErr_SetString(PyExc_MemoryError, "too many buckets for one lookup");
            goto done;
        }
        nspans += per_probe * nprobes;
    }
    spans = PyMem_RawMalloc((size_t)(nspans ? nspans : 1) * sizeof(span_t));
    if (!spans) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t kept = 0;
    int over = 0;
    Py_BEGIN_ALLOW_THREADS
    /* the bucket of every (chunk, probe, mask) */
    Py_ssize_t k = 0;
    for (Py_ssize_t c = 0; c < nchunks && !problem; c++) {
        const int64_t *chunk = plan + 5 * c;
        uint64_t low = (chunk[1] == 64) ? ~0ull : ((1ull << chunk[1]) - 1);
        for (Py_ssize_t p = 0; p < nprobes; p++) {
            int64_t value = (int64_t)((probes[p] >> chunk[0]) & low);
            uint64_t key = sketch_size == 8 ? probes[p] : sketch_of(probes[p], chunk[0], chunk[1]);
            for (int64_t m = chunk[3]; m < chunk[4]; m++) {
                if (masks[m] < 0 || masks[m] > (int64_t)low) {
                    problem = "a mask wider than its chunk";
                    break;
                }
                int64_t bucket = chunk[2] + (value ^ masks[m]);
                if (bucket < 0 || bucket >= noffsets - 1) {
                    problem = "a bucket outside the offsets";
                    break;
                }
                spans[k].start = bucket;
                spans[k].key = key;
                spans[k].probe = probes[p];
                k++;
            }
        }
    }
    /* where each bucket's entries are; the empty ones dropped */
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < k && !problem; i++) {
        int64_t bucket = spans[i].start, start, end;
        if (offset_size == 8) {
            start = ((const int64_t *)offsets)[bucket];
            end = ((const int64_t *)offsets)[bucket + 1];
        } else {
            start = ((const uint32_t *)offsets)[bucket];
            end = ((const uint32_t *)offsets)[bucket + 1];
        }
        if (start < 0 || end < start || end > nsketch) {
            problem = "a bucket outside the sketch";
            break;
        }
        if (end == start) continue;
        spans[kept] = spans[i];
        spans[kept].start = start;
        spans[kept].end = end;
        kept++;
        total += end - start;
    }
    if (!problem && total > budget) over = 1;
    if (!problem && !over) failed = scan_spans(spans, kept, sketch, sketch_size, order, hashes, nhashes, alive, limit, &out);
    Py_END_ALLOW_THREADS
    if (failed == -2) problem = "an entry outside the table";
    if (problem) {
        PyErr_SetString(PyExc_IndexError, problem);
    } else if (failed) {
        PyErr_NoMemory();
    } else if (over) {
        result = Py_NewRef(Py_None);
    } else {
        result = hits_to_bytes(&out);
        out.data = NULL;
    }
done:
    PyMem_RawFree(out.data);
    PyMem_RawFree(spans);
    PyBuffer_Release(&probes_b);
    PyBuffer_Release(&plan_b);
    PyBuffer_Release(&masks_b);
    PyBuffer_Release(&offsets_b);
    PyBuffer_Release(&sketch_b);
    PyBuffer_Release(&order_b);
    PyBuffer_Release(&hashes_b);
    PyBuffer_Release(&alive_b);
    return result;
}

PyDoc_STRVAR(scan_doc,
             "scan(hashes, alive, probes, start, end, limit)\n"
             "--\n\n"
             "Positions (int64 bytes) of live entries in [start, end) within ``limit`` bits of any probe, ascending.");

static PyObject *scan(PyObject *module, PyObject *args) {
    Py_buffer hashes_b, alive_b, probes_b;
    Py_ssize_t start, end;
    int limit, failed = 0;
    (void)module;
    if (!PyArg_ParseTuple(args, "y*y*y*nni", &hashes_b, &alive_b, &probes_b, &start, &end, &limit)) return NULL;
    PyObject *result = NULL;
    hits_t out = {NULL, 0, 0};
    if (start < 0 || end > hashes_b.len / 8 || end > alive_b.len) {
        PyErr_SetString(PyExc_IndexError, "a range outside the table");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    failed = linear(hashes_b.buf, alive_b.buf, probes_b.buf, probes_b.len / 8, start, end, limit, &out);
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_NoMemory();
    } else {
        result = hits_to_bytes(&out);
        out.data = NULL;
    }
done:
    PyMem_RawFree(out.data);
    PyBuffer_Release(&hashes_b);
    PyBuffer_Release(&alive_b);
    PyBuffer_Release(&probes_b);
    return result;
}

static PyMethodDef near_methods[] = {
    {"near", near, METH_VARARGS, near_doc},
    {"scan", scan, METH_VARARGS, scan_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef near_module = {
    PyModuleDef_HEAD_INIT, "_near", "The inner loops of dedupd.index, compiled.", -1, near_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__near(void) {
#if NEAR_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("popcnt")) {
        scan_spans = scan_spans_popcnt;
        linear = linear_popcnt;
    }
#endif
    return PyModule_Create(&near_module);
}
