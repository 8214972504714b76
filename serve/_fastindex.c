/* The lookup hot path of serve.index in C, over the same packed (mapped) buffers the pure-Python path
 * reads: product id -> row through the crc32 open-addressing table, a CSR row's edges as Python lists, and
 * the tuple of Neighbour records of a ranked head. It ranks nothing (serve/index.py owns every rule) and
 * copies no array: it holds read-only buffer views. Every index read from a buffer is checked against the
 * buffer it indexes, so a corrupt file raises CorruptIndex (a ValueError) instead of reading out of bounds.
 * Optional: when it is not built, serve.native falls back to serve.rows / serve.mapped (same answers).
 * This file: the column views, the CSR reader (Rows), the cart sums and the module; _fastnodes.c: Nodes;
 * _fastcart.c: the whole cart in one call (Nodes.cart).
 */
#include "_fastindex.h"
#include <math.h>

PyObject *CorruptIndex;
static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

/* zlib.crc32 (the reflected IEEE polynomial): every worker must find the same slot as the writer. */
uint32_t crc32_of(const unsigned char *s, Py_ssize_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < n; i++) c = crc_table[(c ^ s[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

PyObject *corrupt(const char *what, long long value) {
    PyErr_Format(CorruptIndex, "corrupt index: %s (%lld)", what, value);
    return NULL;
}


int col_open(Col *c, PyObject *obj, const char *kinds, const char *name) {
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
    if (!kind || !strchr(kinds, kind) || c->view.ndim != 1) {
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

void col_close(Col *c) {
    if (c->view.obj) PyBuffer_Release(&c->view);
    c->view.obj = NULL;
}



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
int rows_bounds(Rows *self, Py_ssize_t row, Py_ssize_t *lo, Py_ssize_t *hi) {
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

int check_span(Rows *self, Py_ssize_t lo, Py_ssize_t hi) {
    if (lo < 0 || hi < lo || hi > self->dst.n) {
        PyErr_Format(PyExc_IndexError, "edges %zd..%zd out of range", lo, hi);
        return -1;
    }
    return 0;
}

/* lo and hi from two int arguments, checked against the edge columns; -1 on error */
int span_args(Rows *self, PyObject *a, PyObject *b, Py_ssize_t *lo, Py_ssize_t *hi) {
    if ((*lo = PyNumber_AsSsize_t(a, PyExc_OverflowError)) == -1 && PyErr_Occurred()) return -1;
    if ((*hi = PyNumber_AsSsize_t(b, PyExc_OverflowError)) == -1 && PyErr_Occurred()) return -1;
    return check_span(self, *lo, *hi);
}



/* The score of edge i as a new float: the stored float32 value, or (rounded) float64 rounded to 6 digits
 * exactly as np.round(x, 6) does it (rint(x * 1e6) / 1e6). */
PyObject *rows_score(Rows *self, Py_ssize_t i, int rounded) {
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

/* targets(rows) -> the set of the target rows of these rows (e.g. every substitute of a cart) */
static PyObject *Rows_targets(Rows *self, PyObject *rows) {
    if (!PyList_Check(rows)) {
        PyErr_SetString(PyExc_TypeError, "targets(rows: list)");
        return NULL;
    }
    PyObject *out = PySet_New(NULL);
    if (!out) return NULL;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(rows); k++) {
        Py_ssize_t row = PyNumber_AsSsize_t(PyList_GET_ITEM(rows, k), PyExc_OverflowError), lo, hi;
        if ((row == -1 && PyErr_Occurred()) || rows_bounds(self, row, &lo, &hi) < 0) goto fail;
        for (Py_ssize_t i = lo; i < hi; i++) {
            int64_t t = rows_target(self, i);
            PyObject *x = t < 0 ? NULL : PyLong_FromLongLong(t);
            if (!x || PySet_Add(out, x) < 0) {
                Py_XDECREF(x);
                goto fail;
            }
            Py_DECREF(x);
        }
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
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
    {"targets", (PyCFunction)Rows_targets, METH_O, "set of the target rows of a list of rows"},
    {"dst", (PyCFunction)(void (*)(void))Rows_dst, METH_FASTCALL, "target rows of edges lo..hi"},
    {"reasons", (PyCFunction)(void (*)(void))Rows_reasons, METH_FASTCALL, "reason ids of edges lo..hi"},
    {"via", (PyCFunction)(void (*)(void))Rows_via, METH_FASTCALL, "lender rows of edges lo..hi, or None"},
    {"raw_scores", (PyCFunction)(void (*)(void))Rows_raw_scores, METH_FASTCALL, "float32 scores as floats"},
    {"rounded_scores", (PyCFunction)(void (*)(void))Rows_rounded_scores, METH_FASTCALL, "scores rounded to 6 digits"},
    {NULL},
};

PyTypeObject RowsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "serve._fastindex.Rows",
    .tp_doc = "Rows(indptr, dst, score, reason, via, raw, rounded, n_targets): one CSR, read row by row",
    .tp_basicsize = sizeof(Rows),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Rows_init,
    .tp_dealloc = (destructor)Rows_dealloc,
    .tp_methods = Rows_methods,
};

/* --- sums and gathers over candidate lists [(source, targets, scores, reason ids, lenders | None), ...] ---
 * Arithmetic only, in list order, exactly as the Python loops it replaces: serve.index decides what goes
 * in (which lists, which rows are banned) and everything about the order. */
static int candidate_list(PyObject *lists, Py_ssize_t i, PyObject **dst, PyObject **score, PyObject **reason,
                          PyObject **via) {
    return candidate_tuple(PyList_GET_ITEM(lists, i), dst, score, reason, via);
}

int candidate_tuple(PyObject *item, PyObject **dst, PyObject **score, PyObject **reason, PyObject **via) {
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 5) goto bad;
    *dst = PyTuple_GET_ITEM(item, 1), *score = PyTuple_GET_ITEM(item, 2);
    *reason = PyTuple_GET_ITEM(item, 3), *via = PyTuple_GET_ITEM(item, 4);
    Py_ssize_t n = PyList_Check(*dst) ? PyList_GET_SIZE(*dst) : -1;
    if (n < 0 || !PyList_Check(*score) || PyList_GET_SIZE(*score) != n || !PyList_Check(*reason) ||
        PyList_GET_SIZE(*reason) != n || (*via != Py_None && (!PyList_Check(*via) || PyList_GET_SIZE(*via) != n)))
        goto bad;
    return 0;
bad:
    PyErr_SetString(PyExc_TypeError, "candidate lists: (source, targets, scores, reasons, lenders | None) of equal lengths");
    return -1;
}

/* sum_by_target(lists, banned) -> {target: 0.0 + score + score ...} over targets not in `banned` */
static PyObject *py_sum_by_target(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[0]) || !PyAnySet_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "sum_by_target(lists: list, banned: set)");
        return NULL;
    }
    PyObject *totals = PyDict_New(), *dst, *score, *reason, *via;
    if (!totals) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(args[0]); i++) {
        if (candidate_list(args[0], i, &dst, &score, &reason, &via) < 0) goto fail;
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(dst); j++) {
            PyObject *t = PyList_GET_ITEM(dst, j), *old, *sum;
            int skip = PySet_Contains(args[1], t);
            if (skip < 0) goto fail;
            if (skip) continue;
            double x = PyFloat_AsDouble(PyList_GET_ITEM(score, j));
            if (x == -1.0 && PyErr_Occurred()) goto fail;
            if (!(old = PyDict_GetItemWithError(totals, t)) && PyErr_Occurred()) goto fail;
            sum = PyFloat_FromDouble((old ? PyFloat_AS_DOUBLE(old) : 0.0) + x);
            if (!sum || PyDict_SetItem(totals, t, sum) < 0) {
                Py_XDECREF(sum);
                goto fail;
            }
            Py_DECREF(sum);
        }
    }
    return totals;
fail:
    Py_DECREF(totals);
    return NULL;
}

/* gather(lists, chosen) -> {target: [(score, list index, reason id, lender or -1), ...]} for the chosen
 * targets, in list order then position order */
static PyObject *py_gather(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[0]) || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "gather(lists: list, chosen: list)");
        return NULL;
    }
    PyObject *hits = PyDict_New(), *dst, *score, *reason, *via, *minus_one = NULL;
    if (!hits || !(minus_one = PyLong_FromLong(-1))) goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(args[1]); i++) {
        PyObject *empty = PyList_New(0);
        if (!empty || PyDict_SetItem(hits, PyList_GET_ITEM(args[1], i), empty) < 0) {
            Py_XDECREF(empty);
            goto fail;
        }
        Py_DECREF(empty);
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(args[0]); i++) {
        if (candidate_list(args[0], i, &dst, &score, &reason, &via) < 0) goto fail;
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(dst); j++) {
            PyObject *h = PyDict_GetItemWithError(hits, PyList_GET_ITEM(dst, j)), *index, *hit;
            if (!h) {
                if (PyErr_Occurred()) goto fail;
                continue;
            }
            if (!(index = PyLong_FromSsize_t(i))) goto fail;
            hit = PyTuple_Pack(4, PyList_GET_ITEM(score, j), index, PyList_GET_ITEM(reason, j),
                               via == Py_None ? minus_one : PyList_GET_ITEM(via, j));
            Py_DECREF(index);
            if (!hit || PyList_Append(h, hit) < 0) {
                Py_XDECREF(hit);
                goto fail;
            }
            Py_DECREF(hit);
        }
    }
    Py_DECREF(minus_one);
    return hits;
fail:
    Py_XDECREF(minus_one);
    Py_XDECREF(hits);
    return NULL;
}

static PyObject *py_crc32(PyObject *module, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    uint32_t c = crc32_of(b.buf, b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

static PyMethodDef module_methods[] = {
    {"crc32", py_crc32, METH_O, "zlib.crc32 of a bytes-like object (the id table's hash)"},
    {"sum_by_target", (PyCFunction)(void (*)(void))py_sum_by_target, METH_FASTCALL, "sum_by_target(lists, banned)"},
    {"gather", (PyCFunction)(void (*)(void))py_gather, METH_FASTCALL, "gather(lists, chosen)"},
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
