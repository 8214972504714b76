/* The lookup hot path of serve.index in C, over the same packed (mapped) buffers the pure-Python path
 * reads: product id -> row through the crc32 open-addressing table, a CSR row's edges as Python lists, and
 * the tuple of Neighbour records of a ranked head. It ranks nothing (serve/index.py owns every rule) and
 * copies no array: it holds read-only buffer views. Every index read from a buffer is checked against the
 * buffer it indexes, so a corrupt file raises CorruptIndex (a ValueError) instead of reading out of bounds.
 * Optional: when it is not built, serve.native falls back to serve.rows / serve.mapped (same answers).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static PyObject *CorruptIndex;
static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

/* zlib.crc32 (the reflected IEEE polynomial): every worker must find the same slot as the writer. */
static uint32_t crc32_of(const unsigned char *s, Py_ssize_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < n; i++) c = crc_table[(c ^ s[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static PyObject *corrupt(const char *what, long long value) {
    PyErr_Format(CorruptIndex, "corrupt index: %s (%lld)", what, value);
    return NULL;
}

/* --- columns: a read-only 1-D buffer and its element kind ---------------------------------------------- */
typedef struct {
    Py_buffer view;
    char kind; /* 'i' int32, 'q' int64, 'H' uint16, 'B' uint8, 'f' float32, 'd' float64 */
    Py_ssize_t n;
} Col;

static int col_open(Col *c, PyObject *obj, const char *kinds, const char *name) {
    if (PyObject_GetBuffer(obj, &c->view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    const char *f = c->view.format ? c->view.format : "B";
    Py_ssize_t size = c->view.itemsize;
    char kind = 0;
    while (*f == '@' || *f == '=' || *f == '<') f++; /* native or little-endian (x86-64, arm64) */
    if (f[0] && !f[1]) {
        switch (f[0]) {
        case 'b': case 'h': case 'i': case 'l': case 'q': kind = size == 4 ? 'i' : size == 8 ? 'q' : 0; break;
        case 'B': case 'H': kind = size == 1 ? 'B' : size == 2 ? 'H' : 0; break;
        case 'f': kind = size == 4 ? 'f' : 0; break;
        case 'd': kind = size == 8 ? 'd' : 0; break;
        }
    }
    if (!kind || !strchr(kinds, kind) || c->view.ndim > 1) {
        PyErr_Format(PyExc_TypeError, "%s: a 1-D buffer of one of the kinds '%s' expected, got format '%s'",
                     name, kinds, c->view.format ? c->view.format : "B");
        PyBuffer_Release(&c->view);
        c->view.obj = NULL;
        return -1;
    }
    c->kind = kind;
    c->n = c->view.len / size;
    return 0;
}

static void col_close(Col *c) {
    if (c->view.obj) PyBuffer_Release(&c->view);
    c->view.obj = NULL;
}

static inline int64_t col_int(const Col *c, Py_ssize_t i) {
    const char *p = (const char *)c->view.buf + i * c->view.itemsize;
    int32_t i32; int64_t i64; uint16_t u16;
    switch (c->kind) {
    case 'i': memcpy(&i32, p, 4); return i32;
    case 'q': memcpy(&i64, p, 8); return i64;
    case 'H': memcpy(&u16, p, 2); return u16;
    default: return *(const uint8_t *)p;
    }
}

static inline double col_float(const Col *c, Py_ssize_t i) {
    const char *p = (const char *)c->view.buf + i * c->view.itemsize;
    float f32; double f64;
    if (c->kind == 'f') { memcpy(&f32, p, 4); return f32; }
    memcpy(&f64, p, 8);
    return f64;
}

static inline void col_prefetch(const Col *c, Py_ssize_t i) {
    __builtin_prefetch((const char *)c->view.buf + i * c->view.itemsize);
}

/* --- Rows: one relation kind's CSR (what serve.rows.CsrRows reads) ---------------------------------------- */
typedef struct {
    PyObject_HEAD
    Col indptr, dst, score, reason, via, raw, rounded;
    int has_via, coded;
    Py_ssize_t n_rows, n_targets;
} Rows;

static void Rows_dealloc(Rows *self) {
    Col *cols[] = {&self->indptr, &self->dst, &self->score, &self->reason, &self->via, &self->raw, &self->rounded};
    for (size_t i = 0; i < sizeof cols / sizeof *cols; i++) col_close(cols[i]);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Rows_init(Rows *self, PyObject *args, PyObject *kw) {
    PyObject *indptr, *dst, *score, *reason, *via, *raw, *rounded;
    Py_ssize_t n_targets;
    static char *names[] = {"indptr", "dst", "score", "reason", "via", "raw", "rounded", "n_targets", NULL};
    if (self->indptr.view.obj) {
        PyErr_SetString(PyExc_TypeError, "Rows is immutable");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOOn", names, &indptr, &dst, &score, &reason, &via, &raw,
                                     &rounded, &n_targets))
        return -1;
    self->coded = raw != Py_None;
    self->has_via = via != Py_None;
    if (col_open(&self->indptr, indptr, "iq", "indptr") < 0 || col_open(&self->dst, dst, "i", "dst") < 0 ||
        col_open(&self->score, score, self->coded ? "H" : "f", "score") < 0 ||
        col_open(&self->reason, reason, "Hi", "reason") < 0 ||
        (self->has_via && col_open(&self->via, via, "i", "via") < 0) ||
        (self->coded && (col_open(&self->raw, raw, "f", "raw") < 0 || col_open(&self->rounded, rounded, "d", "rounded") < 0)))
        return -1;
    Py_ssize_t n = self->dst.n;
    if (self->indptr.n < 1 || self->score.n != n || self->reason.n != n || (self->has_via && self->via.n != n) ||
        self->raw.n != self->rounded.n || n_targets < 0) {
        PyErr_SetString(PyExc_ValueError, "Rows: column lengths disagree");
        return -1;
    }
    self->n_rows = self->indptr.n - 1;
    self->n_targets = n_targets;
    return 0;
}

/* lo..hi of `row`, checked against the edge columns; -1 on error */
static int rows_bounds(Rows *self, Py_ssize_t row, Py_ssize_t *lo, Py_ssize_t *hi) {
    if (row < 0 || row >= self->n_rows) {
        PyErr_Format(PyExc_IndexError, "row %zd out of range", row);
        return -1;
    }
    int64_t a = col_int(&self->indptr, row), b = col_int(&self->indptr, row + 1);
    if (a < 0 || b < a || b > self->dst.n) {
        corrupt("indptr out of range at row", row);
        return -1;
    }
    *lo = (Py_ssize_t)a;
    *hi = (Py_ssize_t)b;
    return 0;
}

static int check_span(Rows *self, Py_ssize_t lo, Py_ssize_t hi) {
    if (lo < 0 || hi < lo || hi > self->dst.n) {
        PyErr_Format(PyExc_IndexError, "edges %zd..%zd out of range", lo, hi);
        return -1;
    }
    return 0;
}

/* lo and hi from two int arguments, checked against the edge columns; -1 on error */
static int span_args(Rows *self, PyObject *a, PyObject *b, Py_ssize_t *lo, Py_ssize_t *hi) {
    if ((*lo = PyNumber_AsSsize_t(a, PyExc_OverflowError)) == -1 && PyErr_Occurred()) return -1;
    if ((*hi = PyNumber_AsSsize_t(b, PyExc_OverflowError)) == -1 && PyErr_Occurred()) return -1;
    return check_span(self, *lo, *hi);
}

static inline int64_t rows_target(Rows *self, Py_ssize_t i) {
    int64_t t = col_int(&self->dst, i);
    if (t < 0 || t >= self->n_targets) {
        corrupt("target row", t);
        return -1;
    }
    return t;
}

/* -2 on error; -1 when the edge is direct */
static inline int64_t rows_via(Rows *self, Py_ssize_t i) {
    if (!self->has_via) return -1;
    int64_t v = col_int(&self->via, i);
    if (v < -1 || v >= self->n_targets) {
        corrupt("via row", v);
        return -2;
    }
    return v;
}

/* The score of edge i as a new float: the stored float32 value, or (rounded) float64 rounded to 6 digits
 * exactly as np.round(x, 6) does it (rint(x * 1e6) / 1e6). */
static PyObject *rows_score(Rows *self, Py_ssize_t i, int rounded) {
    if (!self->coded) {
        double x = col_float(&self->score, i);
        return PyFloat_FromDouble(rounded ? rint(x * 1e6) / 1e6 : x);
    }
    int64_t code = col_int(&self->score, i);
    if (code >= self->raw.n) return corrupt("score code", code);
    return PyFloat_FromDouble(col_float(rounded ? &self->rounded : &self->raw, code));
}

static PyObject *Rows_bounds(Rows *self, PyObject *arg) {
    Py_ssize_t row = PyNumber_AsSsize_t(arg, PyExc_OverflowError), lo, hi;
    if (row == -1 && PyErr_Occurred()) return NULL;
    if (rows_bounds(self, row, &lo, &hi) < 0) return NULL;
    return Py_BuildValue("(nn)", lo, hi);
}

static PyObject *Rows_degree(Rows *self, PyObject *arg) {
    Py_ssize_t row = PyNumber_AsSsize_t(arg, PyExc_OverflowError), lo, hi;
    if (row == -1 && PyErr_Occurred()) return NULL;
    if (rows_bounds(self, row, &lo, &hi) < 0) return NULL;
    return PyLong_FromSsize_t(hi - lo);
}

enum { L_DST, L_REASON, L_VIA, L_RAW, L_ROUNDED };

static PyObject *rows_list(Rows *self, PyObject *const *args, Py_ssize_t nargs, int what) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "expected (lo, hi)");
        return NULL;
    }
    Py_ssize_t lo, hi;
    if (span_args(self, args[0], args[1], &lo, &hi) < 0) return NULL;
    if (what == L_VIA && !self->has_via) Py_RETURN_NONE;
    PyObject *out = PyList_New(hi - lo);
    if (!out) return NULL;
    for (Py_ssize_t i = lo; i < hi; i++) {
        PyObject *x;
        if (what == L_DST || what == L_VIA) {
            int64_t v = what == L_DST ? rows_target(self, i) : rows_via(self, i);
            x = v < (what == L_DST ? 0 : -1) ? NULL : PyLong_FromLongLong(v);
        } else if (what == L_REASON) {
            x = PyLong_FromLongLong(col_int(&self->reason, i));
        } else {
            x = rows_score(self, i, what == L_ROUNDED);
        }
        if (!x) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i - lo, x);
    }
    return out;
}

#define ROWS_LIST(name, what) \
    static PyObject *Rows_##name(Rows *self, PyObject *const *a, Py_ssize_t n) { return rows_list(self, a, n, what); }
ROWS_LIST(dst, L_DST)
ROWS_LIST(reasons, L_REASON)
ROWS_LIST(via, L_VIA)
ROWS_LIST(raw_scores, L_RAW)
ROWS_LIST(rounded_scores, L_ROUNDED)

static PyMethodDef Rows_methods[] = {
    {"bounds", (PyCFunction)Rows_bounds, METH_O, "(lo, hi) of a row's edges"},
    {"degree", (PyCFunction)Rows_degree, METH_O, "number of edges of a row"},
    {"dst", (PyCFunction)(void (*)(void))Rows_dst, METH_FASTCALL, "target rows of edges lo..hi"},
    {"reasons", (PyCFunction)(void (*)(void))Rows_reasons, METH_FASTCALL, "reason ids of edges lo..hi"},
    {"via", (PyCFunction)(void (*)(void))Rows_via, METH_FASTCALL, "lender rows of edges lo..hi, or None"},
    {"raw_scores", (PyCFunction)(void (*)(void))Rows_raw_scores, METH_FASTCALL, "float32 scores as floats"},
    {"rounded_scores", (PyCFunction)(void (*)(void))Rows_rounded_scores, METH_FASTCALL, "scores rounded to 6 digits"},
    {NULL},
};

static PyTypeObject RowsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "serve._fastindex.Rows",
    .tp_doc = "Rows(indptr, dst, score, reason, via, raw, rounded, n_targets): one CSR, read row by row",
    .tp_basicsize = sizeof(Rows),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Rows_init,
    .tp_dealloc = (destructor)Rows_dealloc,
    .tp_methods = Rows_methods,
};

/* --- Nodes: id -> row and the per-product columns a Neighbour shows --------------------------------------- */
typedef struct {
    PyObject_HEAD
    Col table, ids_blob, ids_ends, titles_blob, titles_ends, cat_of, price;
    PyObject *cats, *reasons, *empty;
    PyTypeObject *record;
    Py_ssize_t n;
} Nodes;

static void Nodes_dealloc(Nodes *self) {
    Col *cols[] = {&self->table, &self->ids_blob, &self->ids_ends, &self->titles_blob, &self->titles_ends,
                   &self->cat_of, &self->price};
    for (size_t i = 0; i < sizeof cols / sizeof *cols; i++) col_close(cols[i]);
    Py_CLEAR(self->cats);
    Py_CLEAR(self->reasons);
    Py_CLEAR(self->empty);
    Py_CLEAR(self->record);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Nodes_init(Nodes *self, PyObject *args, PyObject *kw) {
    PyObject *table, *ids_blob, *ids_ends, *titles_blob, *titles_ends, *cat_of, *price, *cats, *reasons, *record;
    static char *names[] = {"table", "ids_blob", "ids_ends", "titles_blob", "titles_ends", "cat_of", "price",
                            "categories", "reasons", "record", NULL};
    if (self->record) {
        PyErr_SetString(PyExc_TypeError, "Nodes is immutable");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOOO!O!O!", names, &table, &ids_blob, &ids_ends, &titles_blob,
                                     &titles_ends, &cat_of, &price, &PyTuple_Type, &cats, &PyTuple_Type, &reasons,
                                     &PyType_Type, &record))
        return -1;
    if (!PyType_IsSubtype((PyTypeObject *)record, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "record: a tuple subclass (a NamedTuple) expected");
        return -1;
    }
    self->cats = Py_NewRef(cats);
    self->reasons = Py_NewRef(reasons);
    self->record = (PyTypeObject *)Py_NewRef(record);
    if (!(self->empty = PyTuple_New(0))) return -1;
    if (col_open(&self->table, table, "i", "table") < 0 || col_open(&self->ids_blob, ids_blob, "B", "ids_blob") < 0 ||
        col_open(&self->ids_ends, ids_ends, "iq", "ids_ends") < 0 ||
        col_open(&self->titles_blob, titles_blob, "B", "titles_blob") < 0 ||
        col_open(&self->titles_ends, titles_ends, "iq", "titles_ends") < 0 ||
        col_open(&self->cat_of, cat_of, "i", "cat_of") < 0 || col_open(&self->price, price, "d", "price") < 0)
        return -1;
    Py_ssize_t n = self->ids_ends.n - 1, size = self->table.n;
    if (n < 0 || self->titles_ends.n != n + 1 || self->cat_of.n != n || self->price.n != n) {
        PyErr_SetString(PyExc_ValueError, "Nodes: column lengths disagree");
        return -1;
    }
    if (size < 1 || (size & (size - 1))) {
        PyErr_SetString(PyExc_ValueError, "Nodes: the id table's size must be a power of two");
        return -1;
    }
    self->n = n;
    return 0;
}

static PyObject *string_at(const Col *blob, const Col *ends, int64_t r) {
    int64_t a = col_int(ends, r), b = col_int(ends, r + 1);
    if (a < 0 || b < a || b > blob->n) return corrupt("string offsets of row", r);
    return PyUnicode_DecodeUTF8((const char *)blob->view.buf + a, (Py_ssize_t)(b - a), NULL);
}

/* row of `key`, -1 when absent, -2 on error */
static Py_ssize_t nodes_find(Nodes *self, PyObject *key) {
    if (!PyUnicode_Check(key)) {
        PyErr_Format(PyExc_TypeError, "product id must be str, not %.100s", Py_TYPE(key)->tp_name);
        return -2;
    }
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(key, &len);
    if (!s) return -2;
    const char *blob = self->ids_blob.view.buf;
    Py_ssize_t mask = self->table.n - 1, slot = (Py_ssize_t)(crc32_of((const unsigned char *)s, len) & mask);
    for (Py_ssize_t probe = 0; probe <= mask; probe++, slot = (slot + 1) & mask) {
        int64_t row = col_int(&self->table, slot);
        if (row < 0) return -1;
        if (row >= self->n) return corrupt("id table row", row), -2;
        int64_t a = col_int(&self->ids_ends, row), b = col_int(&self->ids_ends, row + 1);
        if (a < 0 || b < a || b > self->ids_blob.n) return corrupt("string offsets of row", row), -2;
        if (b - a == len && memcmp(blob + a, s, (size_t)len) == 0) return (Py_ssize_t)row;
    }
    return corrupt("id table without an empty slot", mask + 1), -2;
}

static PyObject *Nodes_row(Nodes *self, PyObject *key) {
    Py_ssize_t row = nodes_find(self, key);
    return row == -2 ? NULL : PyLong_FromSsize_t(row);
}

/* A record (Neighbour) of target t. Steals `score`. v < 0: direct (via None). */
static PyObject *make_neighbour(Nodes *self, int64_t t, PyObject *score, int64_t r, int64_t v) {
    if (!score) return NULL;
    if (t < 0 || t >= self->n || v >= self->n) {
        Py_DECREF(score);
        return corrupt("product row", t < 0 || t >= self->n ? t : v);
    }
    int64_t c = col_int(&self->cat_of, t);
    if (c < -1 || c >= PyTuple_GET_SIZE(self->cats) || r < 0 || r >= PyTuple_GET_SIZE(self->reasons)) {
        Py_DECREF(score);
        return corrupt(c < -1 || c >= PyTuple_GET_SIZE(self->cats) ? "category id" : "reason id",
                       c < -1 || c >= PyTuple_GET_SIZE(self->cats) ? c : r);
    }
    /* what tuple.__new__(Neighbour, fields) does (tuple_subtype_new), without the argument tuple */
    PyObject *item = self->record->tp_alloc(self->record, 7), *x;
    if (!item) {
        Py_DECREF(score);
        return NULL;
    }
    PyTuple_SET_ITEM(item, 4, score);
    if (!(x = string_at(&self->ids_blob, &self->ids_ends, t))) goto fail;
    PyTuple_SET_ITEM(item, 0, x);
    if (!(x = string_at(&self->titles_blob, &self->titles_ends, t))) goto fail;
    PyTuple_SET_ITEM(item, 1, x);
    PyTuple_SET_ITEM(item, 2, Py_NewRef(c < 0 ? self->empty : PyTuple_GET_ITEM(self->cats, c)));
    double p = col_float(&self->price, t);
    if (!(x = p != p ? Py_NewRef(Py_None) : PyFloat_FromDouble(p))) goto fail; /* NaN = no price */
    PyTuple_SET_ITEM(item, 3, x);
    PyTuple_SET_ITEM(item, 5, Py_NewRef(PyTuple_GET_ITEM(self->reasons, r)));
    if (!(x = v < 0 ? Py_NewRef(Py_None) : string_at(&self->ids_blob, &self->ids_ends, v))) goto fail;
    PyTuple_SET_ITEM(item, 6, x);
#if PY_VERSION_HEX >= 0x030E0000
    /* 3.14 caches tuple hashes in a field tp_alloc zeroes: build through tuple.__new__ there */
    PyObject *plain = PySequence_Tuple(item), *args;
    Py_DECREF(item);
    if (!plain || !(args = PyTuple_Pack(1, plain))) {
        Py_XDECREF(plain);
        return NULL;
    }
    Py_DECREF(plain);
    item = PyTuple_Type.tp_new(self->record, args, NULL);
    Py_DECREF(args);
#endif
    return item;
fail:
    Py_DECREF(item);
    return NULL;
}

#define CHUNK 32

/* head(rows, lo, hi): the Neighbours of edges lo..hi of `rows`, as stored (already ranked). The rows are
 * touched first with prefetches, so the cache misses of ten random products overlap instead of queueing. */
static PyObject *Nodes_head(Nodes *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyObject_TypeCheck(args[0], &RowsType)) {
        PyErr_SetString(PyExc_TypeError, "head(rows: Rows, lo: int, hi: int)");
        return NULL;
    }
    Rows *rows = (Rows *)args[0];
    Py_ssize_t lo, hi;
    if (span_args(rows, args[1], args[2], &lo, &hi) < 0) return NULL;
    PyObject *out = PyTuple_New(hi - lo);
    if (!out) return NULL;
    int64_t t[CHUNK];
    for (Py_ssize_t base = lo; base < hi; base += CHUNK) {
        Py_ssize_t m = hi - base < CHUNK ? hi - base : CHUNK;
        for (Py_ssize_t j = 0; j < m; j++) {
            t[j] = col_int(&rows->dst, base + j);
            if (t[j] < 0 || t[j] >= self->n) {
                Py_DECREF(out);
                return corrupt("target row", t[j]);
            }
            col_prefetch(&self->ids_ends, t[j]);
            col_prefetch(&self->titles_ends, t[j]);
            col_prefetch(&self->cat_of, t[j]);
            col_prefetch(&self->price, t[j]);
        }
        for (Py_ssize_t j = 0; j < m; j++) {
            int64_t a = col_int(&self->ids_ends, t[j]), b = col_int(&self->titles_ends, t[j]);
            if (a >= 0 && a < self->ids_blob.n) col_prefetch(&self->ids_blob, a);
            if (b >= 0 && b < self->titles_blob.n) col_prefetch(&self->titles_blob, b);
        }
        for (Py_ssize_t j = 0; j < m; j++) {
            Py_ssize_t i = base + j;
            int64_t v = rows_via(rows, i);
            PyObject *item = v < -1 ? NULL
                : make_neighbour(self, t[j], rows_score(rows, i, 1), col_int(&rows->reason, i), v);
            if (!item) {
                Py_DECREF(out);
                return NULL;
            }
            PyTuple_SET_ITEM(out, i - lo, item);
        }
    }
    return out;
}

static int64_t as_int64(PyObject *x) {
    long long v = PyLong_AsLongLong(x);
    return v == -1 && PyErr_Occurred() ? INT64_MIN : v;
}

/* neighbours(rows, scores, reason_ids, vias or None): Neighbours of rows chosen in Python (fallbacks,
 * filters), scores already rounded. Lists of equal length. */
static PyObject *Nodes_neighbours(Nodes *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyList_Check(args[0]) || !PyList_Check(args[1]) || !PyList_Check(args[2]) ||
        (args[3] != Py_None && !PyList_Check(args[3]))) {
        PyErr_SetString(PyExc_TypeError, "neighbours(rows: list, scores: list, reason_ids: list, vias: list | None)");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(args[0]);
    if (PyList_GET_SIZE(args[1]) != n || PyList_GET_SIZE(args[2]) != n ||
        (args[3] != Py_None && PyList_GET_SIZE(args[3]) != n)) {
        PyErr_SetString(PyExc_ValueError, "neighbours: lists of different lengths");
        return NULL;
    }
    PyObject *out = PyTuple_New(n);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t t = as_int64(PyList_GET_ITEM(args[0], i)), r = as_int64(PyList_GET_ITEM(args[2], i));
        int64_t v = args[3] == Py_None ? -1 : as_int64(PyList_GET_ITEM(args[3], i));
        PyObject *item = NULL;
        if (!PyErr_Occurred()) {
            if (t < 0 || v < -1) corrupt("row", t < 0 ? t : v);
            else item = make_neighbour(self, t, Py_NewRef(PyList_GET_ITEM(args[1], i)), r, v);
        }
        if (!item) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, item);
    }
    return out;
}

static PyObject *take(Nodes *self, PyObject *rows, const Col *blob, const Col *ends) {
    if (!PyList_Check(rows)) {
        PyErr_SetString(PyExc_TypeError, "a list of rows expected");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows);
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t r = as_int64(PyList_GET_ITEM(rows, i));
        PyObject *x = NULL;
        if (!PyErr_Occurred()) x = r < 0 || r >= self->n ? corrupt("product row", r) : string_at(blob, ends, r);
        if (!x) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, x);
    }
    return out;
}

static PyObject *Nodes_take_ids(Nodes *self, PyObject *rows) {
    return take(self, rows, &self->ids_blob, &self->ids_ends);
}

static PyObject *Nodes_take_titles(Nodes *self, PyObject *rows) {
    return take(self, rows, &self->titles_blob, &self->titles_ends);
}

static PyMethodDef Nodes_methods[] = {
    {"row", (PyCFunction)Nodes_row, METH_O, "row of a product id, -1 when absent"},
    {"head", (PyCFunction)(void (*)(void))Nodes_head, METH_FASTCALL, "head(rows, lo, hi) -> tuple of records"},
    {"neighbours", (PyCFunction)(void (*)(void))Nodes_neighbours, METH_FASTCALL,
     "neighbours(rows, scores, reason_ids, vias) -> tuple of records"},
    {"take_ids", (PyCFunction)Nodes_take_ids, METH_O, "ids of a list of rows"},
    {"take_titles", (PyCFunction)Nodes_take_titles, METH_O, "titles of a list of rows"},
    {NULL},
};

static PyTypeObject NodesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "serve._fastindex.Nodes",
    .tp_doc = "Nodes(table, ids_blob, ids_ends, titles_blob, titles_ends, cat_of, price, categories, reasons, record)",
    .tp_basicsize = sizeof(Nodes),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Nodes_init,
    .tp_dealloc = (destructor)Nodes_dealloc,
    .tp_methods = Nodes_methods,
};

static PyObject *py_crc32(PyObject *module, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    uint32_t c = crc32_of(b.buf, b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

static PyMethodDef module_methods[] = {
    {"crc32", py_crc32, METH_O, "zlib.crc32 of a bytes-like object (the id table's hash)"},
    {NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "serve._fastindex", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit__fastindex(void) {
    crc_init();
    if (PyType_Ready(&RowsType) < 0 || PyType_Ready(&NodesType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    CorruptIndex = PyErr_NewException("serve._fastindex.CorruptIndex", PyExc_ValueError, NULL);
    if (!CorruptIndex || PyModule_AddObjectRef(m, "CorruptIndex", CorruptIndex) < 0 ||
        PyModule_AddObjectRef(m, "Rows", (PyObject *)&RowsType) < 0 ||
        PyModule_AddObjectRef(m, "Nodes", (PyObject *)&NodesType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
