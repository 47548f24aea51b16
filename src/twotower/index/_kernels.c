/* twotower.index._kernels: compiled loops for per-query exclusions (optional).
 *
 * numpy has no one call that walks a list of per-query id arrays, so the numpy path
 * concatenates them (one copy of every id), then reads every id again for each step
 * (range check, band look-up, scatter). These loops read each caller's array in place,
 * once per step. Built by setup.py when a C compiler is there; without it, or with
 * TWOTOWER_NO_KERNELS=1, twotower.index.filters takes the numpy path, which gives the
 * same results (tests/index run both).
 *
 * The passes that find ids (near_rows, near_flat) release the GIL while
 * they read (other threads of a server go on); the others hold it. Every function checks
 * what it reads: an id outside [0, n), or a row
 * whose length no longer matches `ptr` (the caller changed an array during the search),
 * is a ValueError, never a read or write outside an array.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_2_0_API_VERSION
#include <numpy/arrayobject.h>
#include <stdint.h>
#include <string.h>

/* A row the fast path takes: an exact 1-D, C-contiguous, aligned int64 ndarray. */
static int int64_row(PyObject *o) {
    if (!PyArray_CheckExact(o)) return 0;
    PyArrayObject *a = (PyArrayObject *)o;
    return PyArray_NDIM(a) == 1 && PyArray_TYPE(a) == NPY_INT64 &&
           PyArray_ISCARRAY_RO(a) && PyArray_ISNOTSWAPPED(a);
}

/* An array argument of the given type, 1-D (ndim 1) or 2-D (ndim 2), C-contiguous. */
static int want(PyArrayObject *a, int type, int ndim, const char *name) {
    if (PyArray_TYPE(a) != type || PyArray_NDIM(a) != ndim || !PyArray_ISCARRAY_RO(a) ||
        !PyArray_ISNOTSWAPPED(a)) {
        PyErr_Format(PyExc_TypeError, "_kernels: `%s` must be a C-contiguous %d-D array of "
                     "the expected type", name, ndim);
        return 0;
    }
    return 1;
}

/* The rows of `rows` (a tuple: the search keeps its own snapshot of the caller's list). */
static int row_of(PyObject *rows, Py_ssize_t q, const int64_t *ptr, const int64_t **v,
                  npy_intp *len) {
    PyObject *o = PyTuple_GET_ITEM(rows, q);
    npy_intp want_len = (npy_intp)(ptr[q + 1] - ptr[q]);
    if (!int64_row(o) || PyArray_DIM((PyArrayObject *)o, 0) != want_len) {
        PyErr_Format(PyExc_ValueError, "`exclude[%zd]` changed during the search: pass "
                     "arrays that no other thread changes while it runs", q);
        return 0;
    }
    *v = (const int64_t *)PyArray_DATA((PyArrayObject *)o);
    *len = want_len;
    return 1;
}

static PyObject *bad_id(Py_ssize_t q) {
    PyErr_Format(PyExc_ValueError, "`exclude[%zd]` changed during the search (an id "
                 "outside the catalogue): pass arrays that no other thread changes while "
                 "it runs", q);
    return NULL;
}

/* 1 when every id of v[0 .. len) is below n, read as unsigned (a negative id is past any
 * n): u < n is the borrow of u - n, bit 63 of (~u & n) | ((~u | n) & (u - n)) (Hacker's
 * Delight 2-13), bit operations and a subtraction that compilers vectorise with the
 * baseline SIMD, where a 64-bit compare is not in it (the max it replaces did not). */
static int in_range(const uint64_t *v, npy_intp len, uint64_t n) {
    uint64_t all = ~(uint64_t)0;
    for (npy_intp j = 0; j < len; j++) {
        uint64_t u = v[j];
        all &= (~u & n) | ((~u | n) & (u - n));
    }
    return (int)(all >> 63);
}

/* check_rows(rows: list | tuple, n) -> ptr int64[b + 1] (CSR offsets of the rows), or the
 * number of the first row that the fast path does not take (not an int64 array as above,
 * or an id outside [0, n)): the caller then reads them the slow way, which names it. */
static PyObject *check_rows(PyObject *self, PyObject *args) {
    PyObject *rows;
    long long n;
    if (!PyArg_ParseTuple(args, "OL", &rows, &n)) return NULL;
    if (!PyList_Check(rows) && !PyTuple_Check(rows)) return PyLong_FromLong(0);
    Py_ssize_t b = PySequence_Fast_GET_SIZE(rows);
    PyObject **items = PySequence_Fast_ITEMS(rows);
    npy_intp dims[1] = {b + 1};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT64);
    if (out == NULL) return NULL;
    int64_t *ptr = (int64_t *)PyArray_DATA(out);
    ptr[0] = 0;
    for (Py_ssize_t q = 0; q < b; q++) {
        PyObject *o = items[q];
        if (!int64_row(o)) {
            Py_DECREF(out);
            return PyLong_FromSsize_t(q);
        }
        PyArrayObject *a = (PyArrayObject *)o;
        npy_intp len = PyArray_DIM(a, 0);
        if (!in_range((const uint64_t *)PyArray_DATA(a), len, (uint64_t)n)) {
            Py_DECREF(out);
            return PyLong_FromSsize_t(q);
        }
        ptr[q + 1] = ptr[q] + len;
    }
    return (PyObject *)out;
}

/* Growing (query row, storage row) pairs (the raw allocator: filled without the GIL). */
typedef struct {
    int64_t *q, *c;
    npy_intp m, cap;
} Pairs;

static int push(Pairs *p, int64_t q, int64_t c) {
    if (p->m == p->cap) {
        npy_intp cap = p->cap ? p->cap * 2 : 1024;
        int64_t *nq = PyMem_RawRealloc(p->q, cap * sizeof(int64_t));
        if (nq == NULL) return 0;
        p->q = nq;
        int64_t *nc = PyMem_RawRealloc(p->c, cap * sizeof(int64_t));
        if (nc == NULL) return 0;
        p->c = nc;
        p->cap = cap;
    }
    p->q[p->m] = q;
    p->c[p->m] = c;
    p->m++;
    return 1;
}

static void pairs_free(Pairs *p) {
    PyMem_RawFree(p->q);
    PyMem_RawFree(p->c);
    p->q = p->c = NULL;
}

/* One pass over the ids of rows [0, b): every id checked against [0, n), and (q, row)
 * pushed for each id x whose bit is set in `bt` and whose storage row ex_map[x] is below
 * `near`. The ids are rows' own arrays (`v[q]`, `len[q]` long) or flat CSR arrays
 * (`ids` int64 or `ids32`, row q at [ptr[q], ptr[q + 1]) of `total`). It touches no Python
 * object: it runs without the GIL. */
typedef struct {
    const int64_t *const *v;
    const npy_intp *len;
    const int64_t *ptr, *ids;
    const int32_t *ids32;
    int64_t total;
    uint64_t n;
    const uint8_t *bt;
    const void *em;
    int wide;
    int64_t near;
    Pairs p;
    Py_ssize_t bad;   /* the first row with an id outside [0, n), or -1 */
    int64_t bad_id;
    int bad_ptr;      /* flat offsets out of order or past `total` */
    int nomem;
} Scan;

/* Storage row of id x, through ex_map (int32 or int64). */
static inline int64_t map_id(const void *ex_map, int wide, int64_t x) {
    return wide ? ((const int64_t *)ex_map)[x] : (int64_t)((const int32_t *)ex_map)[x];
}

/* One id of row q: 0 to stop (s->bad or s->nomem set). */
static inline int scan_id(Scan *s, Py_ssize_t q, int64_t v) {
    uint64_t x = (uint64_t)v;  /* a negative id read as unsigned is past any n */
    if (x >= s->n) {
        s->bad = q;
        s->bad_id = v;
        return 0;
    }
    if ((s->bt[x >> 3] >> (x & 7)) & 1) {
        int64_t c = map_id(s->em, s->wide, (int64_t)x);
        if (c < s->near && !push(&s->p, q, c)) {
            s->nomem = 1;
            return 0;
        }
    }
    return 1;
}

static void scan(Scan *s, Py_ssize_t b) {
    for (Py_ssize_t q = 0; q < b; q++) {
        if (s->v != NULL) {
            const int64_t *v = s->v[q];
            npy_intp len = s->len[q];
            for (npy_intp j = 0; j < len; j++)
                if (!scan_id(s, q, v[j])) return;
            continue;
        }
        int64_t j0 = s->ptr[q], j1 = s->ptr[q + 1];  /* read once: checked as read */
        if (j0 > j1 || j0 < 0 || j1 > s->total) {
            s->bad_ptr = 1;
            return;
        }
        if (s->ids32 != NULL) {
            for (int64_t j = j0; j < j1; j++)
                if (!scan_id(s, q, s->ids32[j])) return;
        } else {
            for (int64_t j = j0; j < j1; j++)
                if (!scan_id(s, q, s->ids[j])) return;
        }
    }
}

/* Scans rows [0, b) of `s` (the other fields set) with the GIL released. (Two threads,
 * each half the rows, measured no faster in the search, paired, ad hoc: a helper thread
 * started right after the search's workers finish costs what it saves.) */
static void scan_all(Scan *s, Py_ssize_t b) {
    s->bad = -1;
    Py_BEGIN_ALLOW_THREADS
    scan(s, b);
    Py_END_ALLOW_THREADS
}

/* (query rows int64[m], storage rows int64[m]) from `p` (freed). */
static PyObject *pairs_out(Pairs *p) {
    npy_intp dims[1] = {p->m};
    PyObject *rq = PyArray_SimpleNew(1, dims, NPY_INT64);
    PyObject *rc = PyArray_SimpleNew(1, dims, NPY_INT64);
    if (rq != NULL && rc != NULL && p->m) {
        memcpy(PyArray_DATA((PyArrayObject *)rq), p->q, p->m * sizeof(int64_t));
        memcpy(PyArray_DATA((PyArrayObject *)rc), p->c, p->m * sizeof(int64_t));
    }
    pairs_free(p);
    if (rq == NULL || rc == NULL) {
        Py_XDECREF(rq);
        Py_XDECREF(rc);
        return NULL;
    }
    return Py_BuildValue("NN", rq, rc);
}

/* The shared arguments of near_rows and near_flat, into `s`. */
static int near_args(Scan *s, PyArrayObject *bits, PyArrayObject *ex_map, long long n,
                     long long near) {
    if (!want(bits, NPY_UINT8, 1, "bits")) return 0;
    if (PyArray_TYPE(ex_map) != NPY_INT32 && PyArray_TYPE(ex_map) != NPY_INT64) {
        PyErr_SetString(PyExc_TypeError, "_kernels: `ex_map` must be int32 or int64");
        return 0;
    }
    if (!want(ex_map, PyArray_TYPE(ex_map), 1, "ex_map")) return 0;
    if (n < 0 || PyArray_DIM(ex_map, 0) < n || PyArray_DIM(bits, 0) * 8 < n) {
        PyErr_SetString(PyExc_ValueError, "_kernels: `ex_map` and `bits` must cover n ids");
        return 0;
    }
    memset(s, 0, sizeof(Scan));
    s->n = (uint64_t)n;
    s->near = near;
    s->bt = (const uint8_t *)PyArray_DATA(bits);
    s->em = PyArray_DATA(ex_map);
    s->wide = PyArray_TYPE(ex_map) == NPY_INT64;
    return 1;
}

/* The rows of tuple `rows` as C arrays `v` and `len` (PyMem_Free both), each row checked
 * against the offsets `ptr` the caller had (row_of); 0 with an error set otherwise. */
static int rows_of(PyObject *rows, const int64_t *ptr, const int64_t ***v_out,
                   npy_intp **len_out) {
    Py_ssize_t b = PyTuple_GET_SIZE(rows);
    const int64_t **v = PyMem_Malloc((b ? b : 1) * sizeof(*v));
    npy_intp *len = PyMem_Malloc((b ? b : 1) * sizeof(*len));
    *v_out = v;
    *len_out = len;
    if (v == NULL || len == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    for (Py_ssize_t q = 0; q < b; q++)
        if (!row_of(rows, q, ptr, &v[q], &len[q])) return 0;
    return 1;
}

/* near_rows(rows: tuple, ptr, bits uint8, ex_map int32|int64, near, n)
 * -> (query rows int64[m], storage rows int64[m]): the ids of the rows whose storage row
 * (ex_map[id]) is below `near`, in query order. Bit x of `bits` (little-endian within each
 * byte) is set for every id that may lie below `near`; only those are mapped. */
static PyObject *near_rows(PyObject *self, PyObject *args) {
    PyObject *rows;
    PyArrayObject *ptr_a, *bits, *ex_map;
    long long near, n;
    Scan s[1];
    if (!PyArg_ParseTuple(args, "O!O!O!O!LL", &PyTuple_Type, &rows, &PyArray_Type, &ptr_a,
                          &PyArray_Type, &bits, &PyArray_Type, &ex_map, &near, &n))
        return NULL;
    if (!want(ptr_a, NPY_INT64, 1, "ptr") || !near_args(s, bits, ex_map, n, near))
        return NULL;
    Py_ssize_t b = PyTuple_GET_SIZE(rows);
    if (PyArray_DIM(ptr_a, 0) != b + 1) {
        PyErr_SetString(PyExc_ValueError, "_kernels: `ptr` must have one entry per row + 1");
        return NULL;
    }
    const int64_t **v = NULL;
    npy_intp *len = NULL;
    PyObject *res = NULL;
    if (rows_of(rows, (const int64_t *)PyArray_DATA(ptr_a), &v, &len)) {
        s->v = v;
        s->len = len;
        scan_all(s, b);
        if (s->nomem)
            PyErr_NoMemory();
        else if (s->bad >= 0)
            bad_id(s->bad);
        else
            res = pairs_out(&s->p);
    }
    pairs_free(&s->p);
    PyMem_Free(v);
    PyMem_Free(len);
    return res;
}

/* near_flat(ptr, ids int64 | int32, bits, ex_map, near, n): near_rows for flat
 * CSR arrays (int32: a scipy CSR matrix's own indices, read without an int64 copy). */
static PyObject *near_flat(PyObject *self, PyObject *args) {
    PyArrayObject *ptr_a, *ids_a, *bits, *ex_map;
    long long near, n;
    Scan s[1];
    if (!PyArg_ParseTuple(args, "O!O!O!O!LL", &PyArray_Type, &ptr_a, &PyArray_Type, &ids_a,
                          &PyArray_Type, &bits, &PyArray_Type, &ex_map, &near, &n))
        return NULL;
    if (!want(ptr_a, NPY_INT64, 1, "ptr") || !near_args(s, bits, ex_map, n, near))
        return NULL;
    int ids32 = PyArray_TYPE(ids_a) == NPY_INT32;
    if (!want(ids_a, ids32 ? NPY_INT32 : NPY_INT64, 1, "ids")) return NULL;
    npy_intp b = PyArray_DIM(ptr_a, 0) - 1;
    const int64_t *ptr = (const int64_t *)PyArray_DATA(ptr_a);
    if (b < 0 || ptr[0] != 0 || ptr[b] != PyArray_DIM(ids_a, 0)) {
        PyErr_SetString(PyExc_ValueError, "_kernels: `ptr` does not match `ids`");
        return NULL;
    }
    s->ptr = ptr;
    s->total = ptr[b];
    if (ids32) s->ids32 = (const int32_t *)PyArray_DATA(ids_a);
    else s->ids = (const int64_t *)PyArray_DATA(ids_a);
    scan_all(s, b);
    PyObject *res = NULL;
    if (s->nomem)
        PyErr_NoMemory();
    else if (s->bad_ptr)
        PyErr_SetString(PyExc_ValueError, "_kernels: `ptr` must not decrease");
    else if (s->bad >= 0)
        PyErr_Format(PyExc_ValueError, "_kernels: id %lld outside [0, %lld) (the caller "
                     "changed `exclude` during the search?)", (long long)s->bad_id, n);
    else
        res = pairs_out(&s->p);
    pairs_free(&s->p);
    return res;
}

/* sorted_heads(t int64[m], ptr int64[R + 1], ids int32 | int64, near) -> (query rows
 * int64, storage rows int64): for each query i, the ids of table row t[i] (ids[ptr[t[i]]
 * .. ptr[t[i] + 1]], sorted ascending) below `near`: a prepared table's heads for one
 * query block, read up to the first id at or past `near` (a few per row), in one call. */
static PyObject *sorted_heads(PyObject *self, PyObject *args) {
    PyArrayObject *t_a, *ptr_a, *ids_a;
    long long near;
    if (!PyArg_ParseTuple(args, "O!O!O!L", &PyArray_Type, &t_a, &PyArray_Type, &ptr_a,
                          &PyArray_Type, &ids_a, &near))
        return NULL;
    int ids32 = PyArray_TYPE(ids_a) == NPY_INT32;
    if (!want(t_a, NPY_INT64, 1, "t") || !want(ptr_a, NPY_INT64, 1, "ptr") ||
        !want(ids_a, ids32 ? NPY_INT32 : NPY_INT64, 1, "ids"))
        return NULL;
    npy_intp m = PyArray_DIM(t_a, 0), rows = PyArray_DIM(ptr_a, 0) - 1;
    int64_t total = PyArray_DIM(ids_a, 0);
    const int64_t *t = (const int64_t *)PyArray_DATA(t_a);
    const int64_t *ptr = (const int64_t *)PyArray_DATA(ptr_a);
    const int32_t *i32 = (const int32_t *)PyArray_DATA(ids_a);
    const int64_t *i64 = (const int64_t *)PyArray_DATA(ids_a);
    Pairs p = {NULL, NULL, 0, 0};
    for (npy_intp i = 0; i < m; i++) {
        int64_t r = t[i];
        if (r < 0 || r >= rows || ptr[r] < 0 || ptr[r] > ptr[r + 1] || ptr[r + 1] > total) {
            pairs_free(&p);
            PyErr_SetString(PyExc_ValueError, "_kernels: sorted_heads: a row outside the "
                            "table");
            return NULL;
        }
        for (int64_t j = ptr[r]; j < ptr[r + 1]; j++) {
            int64_t c = ids32 ? (int64_t)i32[j] : i64[j];
            if (c >= near) break;
            if (!push(&p, i, c)) {
                pairs_free(&p);
                return PyErr_NoMemory();
            }
        }
    }
    return pairs_out(&p);
}

/* top_one(s float32[n], k, rank int32|int64[n] | None) -> (scores float32[m], rows int64[m]),
 * m = min(k, n): the m best entries of one query's scores, best first, equal scores in
 * the order of `rank` (the row's own number when None), by insertion into a sorted list
 * of m (one compare per entry that cannot enter it): the single-query search, where a
 * partition and a sort of the k took three numpy calls. */
static PyObject *top_one(PyObject *self, PyObject *args) {
    PyArrayObject *s_a;
    Py_ssize_t k;
    PyObject *rank_o;
    if (!PyArg_ParseTuple(args, "O!nO", &PyArray_Type, &s_a, &k, &rank_o)) return NULL;
    if (!want(s_a, NPY_FLOAT32, 1, "s")) return NULL;
    npy_intp n = PyArray_DIM(s_a, 0);
    const void *rank = NULL;
    int wide = 1;
    if (rank_o != Py_None) {
        PyArrayObject *ra = (PyArrayObject *)rank_o;
        if (!PyArray_Check(rank_o) ||
            (PyArray_TYPE(ra) != NPY_INT32 && PyArray_TYPE(ra) != NPY_INT64)) {
            PyErr_SetString(PyExc_TypeError, "_kernels: `rank` must be int32 or int64");
            return NULL;
        }
        if (!want(ra, PyArray_TYPE(ra), 1, "rank")) return NULL;
        if (PyArray_DIM(ra, 0) != n) {
            PyErr_SetString(PyExc_ValueError, "_kernels: `rank` must have one entry per score");
            return NULL;
        }
        rank = PyArray_DATA(ra);
        wide = PyArray_TYPE(ra) == NPY_INT64;
    }
    if (k <= 0) {
        PyErr_SetString(PyExc_ValueError, "_kernels: `k` must be positive");
        return NULL;
    }
    npy_intp m = k < n ? k : n;
    npy_intp dims[1] = {m};
    PyArrayObject *sc = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT32);
    PyArrayObject *rw = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT64);
    int64_t *rk = PyMem_Malloc((m ? m : 1) * sizeof(int64_t));
    if (sc == NULL || rw == NULL || rk == NULL) {
        Py_XDECREF(sc);
        Py_XDECREF(rw);
        PyMem_Free(rk);
        return sc == NULL || rw == NULL ? NULL : PyErr_NoMemory();
    }
    const float *s = (const float *)PyArray_DATA(s_a);
    float *ts = (float *)PyArray_DATA(sc);
    int64_t *ti = (int64_t *)PyArray_DATA(rw);
    npy_intp cnt = 0;
    for (npy_intp i = 0; i < n; i++) {
        float v = s[i];
        int64_t r = rank != NULL ? map_id(rank, wide, (int64_t)i) : (int64_t)i;
        npy_intp j;
        if (cnt == m) {
            if (!(v > ts[m - 1] || (v == ts[m - 1] && r < rk[m - 1]))) continue;
            j = m - 1;
        } else {
            j = cnt++;
        }
        while (j > 0 && (v > ts[j - 1] || (v == ts[j - 1] && r < rk[j - 1]))) {
            ts[j] = ts[j - 1];
            ti[j] = ti[j - 1];
            rk[j] = rk[j - 1];
            j--;
        }
        ts[j] = v;
        ti[j] = i;
        rk[j] = r;
    }
    PyMem_Free(rk);
    return Py_BuildValue("NN", (PyObject *)sc, (PyObject *)rw);
}

/* scatter_rows(rows: tuple, ptr, r0, r1, buf float32 [>= r1 - r0, >= n], n, value): sets
 * buf[q - r0, id] = value for every id of rows r0 .. r1 - 1 (a block's excluded scores). */
static PyObject *scatter_rows(PyObject *self, PyObject *args) {
    PyObject *rows;
    PyArrayObject *ptr_a, *buf;
    Py_ssize_t r0, r1;
    long long n;
    float value;
    if (!PyArg_ParseTuple(args, "O!O!nnO!Lf", &PyTuple_Type, &rows, &PyArray_Type, &ptr_a,
                          &r0, &r1, &PyArray_Type, &buf, &n, &value))
        return NULL;
    if (!want(ptr_a, NPY_INT64, 1, "ptr") || !want(buf, NPY_FLOAT32, 2, "buf")) return NULL;
    if (!PyArray_ISWRITEABLE(buf)) {
        PyErr_SetString(PyExc_ValueError, "_kernels: `buf` must be writeable");
        return NULL;
    }
    Py_ssize_t b = PyTuple_GET_SIZE(rows);
    if (PyArray_DIM(ptr_a, 0) != b + 1 || r0 < 0 || r1 > b || r0 > r1 ||
        PyArray_DIM(buf, 0) < r1 - r0 || PyArray_DIM(buf, 1) < n) {
        PyErr_SetString(PyExc_ValueError, "_kernels: scatter_rows out of bounds");
        return NULL;
    }
    const int64_t *ptr = (const int64_t *)PyArray_DATA(ptr_a);
    float *base = (float *)PyArray_DATA(buf);
    npy_intp ld = PyArray_DIM(buf, 1);
    for (Py_ssize_t q = r0; q < r1; q++) {
        const int64_t *v;
        npy_intp len;
        if (!row_of(rows, q, ptr, &v, &len)) return NULL;
        float *row = base + (q - r0) * ld;
        for (npy_intp j = 0; j < len; j++) {
            uint64_t x = (uint64_t)v[j];
            if (x >= (uint64_t)n) return bad_id(q);
            row[x] = value;
        }
    }
    Py_RETURN_NONE;
}

/* scatter_flat(ptr int64 [m + 1], ids int32 | int64, buf float32 [>= m, >= n], n, value):
 * sets buf[q, ids[j]] = value for every j of row q (flat CSR rows of a block: a CSR
 * matrix's, or a prepared table's gathered rows). */
static PyObject *scatter_flat(PyObject *self, PyObject *args) {
    PyArrayObject *ptr_a, *ids_a, *buf;
    long long n;
    float value;
    if (!PyArg_ParseTuple(args, "O!O!O!Lf", &PyArray_Type, &ptr_a, &PyArray_Type, &ids_a,
                          &PyArray_Type, &buf, &n, &value))
        return NULL;
    int ids32 = PyArray_TYPE(ids_a) == NPY_INT32;
    if (!want(ptr_a, NPY_INT64, 1, "ptr") || !want(ids_a, ids32 ? NPY_INT32 : NPY_INT64, 1, "ids")
        || !want(buf, NPY_FLOAT32, 2, "buf"))
        return NULL;
    npy_intp m = PyArray_DIM(ptr_a, 0) - 1;
    const int64_t *ptr = (const int64_t *)PyArray_DATA(ptr_a);
    if (!PyArray_ISWRITEABLE(buf) || m < 0 || PyArray_DIM(buf, 0) < m ||
        PyArray_DIM(buf, 1) < n || ptr[0] != 0 || ptr[m] != PyArray_DIM(ids_a, 0)) {
        PyErr_SetString(PyExc_ValueError, "_kernels: scatter_flat out of bounds");
        return NULL;
    }
    const int64_t *ids = (const int64_t *)PyArray_DATA(ids_a);
    const int32_t *ids_32 = (const int32_t *)PyArray_DATA(ids_a);
    float *base = (float *)PyArray_DATA(buf);
    npy_intp ld = PyArray_DIM(buf, 1);
    for (npy_intp q = 0; q < m; q++) {
        int64_t e = ptr[q + 1];
        if (ptr[q] > e || e > ptr[m]) {
            PyErr_SetString(PyExc_ValueError, "_kernels: `ptr` must not decrease");
            return NULL;
        }
        float *row = base + q * ld;
        for (int64_t j = ptr[q]; j < e; j++) {
            uint64_t x = (uint64_t)(ids32 ? (int64_t)ids_32[j] : ids[j]);
            if (x >= (uint64_t)n) {
                PyErr_SetString(PyExc_ValueError, "_kernels: scatter_flat: an id outside "
                                "the catalogue");
                return NULL;
            }
            row[x] = value;
        }
    }
    Py_RETURN_NONE;
}

/* mask_head(S float32 [r, c] (rows at any stride, columns contiguous), head_row int64,
 * head_col int64, c0, pos int64 [queries] | None, value): sets S[pos[q], col - c0] = value
 * for each (q, col) of a query block's exclusions (head_row, head_col) with c0 <= col <
 * c0 + c: one chunk's. `pos` maps a query to its row of S (-1: not scored in this chunk);
 * None: the query's own row. */
static PyObject *mask_head(PyObject *self, PyObject *args) {
    PyArrayObject *S, *hr, *hc;
    PyObject *pos_o;
    long long c0;
    float value;
    if (!PyArg_ParseTuple(args, "O!O!O!LOf", &PyArray_Type, &S, &PyArray_Type, &hr,
                          &PyArray_Type, &hc, &c0, &pos_o, &value))
        return NULL;
    if (!want(hr, NPY_INT64, 1, "head_row") || !want(hc, NPY_INT64, 1, "head_col"))
        return NULL;
    if (PyArray_TYPE(S) != NPY_FLOAT32 || PyArray_NDIM(S) != 2 || !PyArray_ISWRITEABLE(S) ||
        !PyArray_ISALIGNED(S) || !PyArray_ISNOTSWAPPED(S) ||
        (PyArray_DIM(S, 1) > 1 && PyArray_STRIDE(S, 1) != (npy_intp)sizeof(float)) ||
        PyArray_STRIDE(S, 0) < 0 || PyArray_STRIDE(S, 0) % (npy_intp)sizeof(float)) {
        PyErr_SetString(PyExc_TypeError, "_kernels: `S` must be a writeable float32 2-D "
                        "array with contiguous rows");
        return NULL;
    }
    npy_intp m = PyArray_DIM(hr, 0);
    if (PyArray_DIM(hc, 0) != m) {
        PyErr_SetString(PyExc_ValueError, "_kernels: `head_row` and `head_col` differ in length");
        return NULL;
    }
    const int64_t *pos = NULL;
    npy_intp npos = 0;
    if (pos_o != Py_None) {
        if (!PyArray_Check(pos_o) || !want((PyArrayObject *)pos_o, NPY_INT64, 1, "pos"))
            return NULL;
        pos = (const int64_t *)PyArray_DATA((PyArrayObject *)pos_o);
        npos = PyArray_DIM((PyArrayObject *)pos_o, 0);
    }
    npy_intp rows = PyArray_DIM(S, 0), cols = PyArray_DIM(S, 1);
    npy_intp ld = PyArray_STRIDE(S, 0) / (npy_intp)sizeof(float);
    float *base = (float *)PyArray_DATA(S);
    const int64_t *r = (const int64_t *)PyArray_DATA(hr);
    const int64_t *c = (const int64_t *)PyArray_DATA(hc);
    for (npy_intp i = 0; i < m; i++) {
        int64_t col = c[i] - c0, q = r[i];
        if (col < 0 || col >= cols) continue;  /* another chunk's */
        if (pos != NULL) {
            if (q < 0 || q >= npos) goto out_of_range;
            q = pos[q];
            if (q < 0) continue;  /* a query this chunk does not score */
        }
        if (q < 0 || q >= rows) goto out_of_range;
        base[q * ld + col] = value;
    }
    Py_RETURN_NONE;
out_of_range:
    PyErr_SetString(PyExc_ValueError, "_kernels: mask_head: a query row outside `S`");
    return NULL;
}

static PyMethodDef methods[] = {
    {"check_rows", check_rows, METH_VARARGS, "CSR offsets of int64 id rows, or a row."},
    {"near_rows", near_rows, METH_VARARGS, "Ids of rows stored below `near`."},
    {"near_flat", near_flat, METH_VARARGS, "near_rows for flat CSR arrays."},
    {"scatter_rows", scatter_rows, METH_VARARGS, "Set a block's excluded scores."},
    {"mask_head", mask_head, METH_VARARGS, "Set one chunk's excluded scores."},
    {"scatter_flat", scatter_flat, METH_VARARGS, "scatter_rows for flat CSR rows."},
    {"sorted_heads", sorted_heads, METH_VARARGS, "A prepared table's rows below `near`."},
    {"top_one", top_one, METH_VARARGS, "The k best of one query's scores, in tie order."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels",
                                    "Compiled loops for per-query exclusions.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernels(void) {
    import_array();
    return PyModule_Create(&module);
}
