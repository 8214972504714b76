/* serve._fastindex, second half: Nodes, product id -> row and the records (Neighbour, CartSuggestion) of
 * chosen rows, decoded from the packed id/title blobs and columns. Every index is checked (see _fastindex.c). */
#include "_fastindex.h"

/* --- Nodes (the struct: _fastindex.h) ----------------------------------------------------------------- */

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

PyObject *string_at(const Col *blob, const Col *ends, int64_t r) {
    int64_t a = col_int(ends, r), b = col_int(ends, r + 1);
    if (a < 0 || b < a || b > blob->n) return corrupt("string offsets of row", r);
    return PyUnicode_DecodeUTF8((const char *)blob->view.buf + a, (Py_ssize_t)(b - a), NULL);
}

/* row of `key`, -1 when absent, -2 on error */
Py_ssize_t nodes_find(Nodes *self, PyObject *key) {
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

/* Fields 0..3 of a record (id, title, category path, price or None) of product t, already range-checked. */
int fill_product(Nodes *self, PyObject *item, int64_t t) {
    int64_t c = col_int(&self->cat_of, t);
    if (c < -1 || c >= PyTuple_GET_SIZE(self->cats)) return corrupt("category id", c), -1;
    PyObject *x;
    if (!(x = string_at(&self->ids_blob, &self->ids_ends, t))) return -1;
    PyTuple_SET_ITEM(item, 0, x);
    if (!(x = string_at(&self->titles_blob, &self->titles_ends, t))) return -1;
    PyTuple_SET_ITEM(item, 1, x);
    PyTuple_SET_ITEM(item, 2, Py_NewRef(c < 0 ? self->empty : PyTuple_GET_ITEM(self->cats, c)));
    double p = col_float(&self->price, t);
    if (!(x = p != p ? Py_NewRef(Py_None) : PyFloat_FromDouble(p))) return -1; /* NaN = no price */
    PyTuple_SET_ITEM(item, 3, x);
    return 0;
}

/* What tuple.__new__(type, fields) makes (tuple_subtype_new), without the argument tuple: fill it, then
 * seal() it. */
PyObject *new_record(PyTypeObject *type, Py_ssize_t n) { return type->tp_alloc(type, n); }

PyObject *seal(PyTypeObject *type, PyObject *item) {
#if PY_VERSION_HEX >= 0x030E0000
    /* 3.14 caches tuple hashes in a field tp_alloc zeroes: rebuild through tuple.__new__ there */
    PyObject *plain = PySequence_Tuple(item), *args;
    Py_DECREF(item);
    if (!plain || !(args = PyTuple_Pack(1, plain))) {
        Py_XDECREF(plain);
        return NULL;
    }
    Py_DECREF(plain);
    item = PyTuple_Type.tp_new(type, args, NULL);
    Py_DECREF(args);
#else
    (void)type;
#endif
    return item;
}

/* A record (Neighbour) of target t. Steals `score`. v < 0: direct (via None). */
static PyObject *make_neighbour(Nodes *self, int64_t t, PyObject *score, int64_t r, int64_t v) {
    if (!score) return NULL;
    if (t < 0 || t >= self->n || v >= self->n || r < 0 || r >= PyTuple_GET_SIZE(self->reasons)) {
        Py_DECREF(score);
        return t < 0 || t >= self->n ? corrupt("product row", t) : v >= self->n ? corrupt("via row", v)
                                                                                : corrupt("reason id", r);
    }
    PyObject *item = new_record(self->record, 7), *x;
    if (!item) {
        Py_DECREF(score);
        return NULL;
    }
    PyTuple_SET_ITEM(item, 4, score);
    if (fill_product(self, item, t) < 0) goto fail;
    PyTuple_SET_ITEM(item, 5, Py_NewRef(PyTuple_GET_ITEM(self->reasons, r)));
    if (!(x = v < 0 ? Py_NewRef(Py_None) : string_at(&self->ids_blob, &self->ids_ends, v))) goto fail;
    PyTuple_SET_ITEM(item, 6, x);
    return seal(self->record, item);
fail:
    Py_DECREF(item);
    return NULL;
}

/* Touch the columns of product t (a valid row) so that the cache misses of several products overlap. */
void prefetch_product(Nodes *self, int64_t t) {
    col_prefetch(&self->ids_ends, t);
    col_prefetch(&self->titles_ends, t);
    col_prefetch(&self->cat_of, t);
    col_prefetch(&self->price, t);
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
            prefetch_product(self, t[j]);
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


/* records(type, rows, columns): type(id, title, category, price, *(column[i] for column in columns)) for
 * every row i of a list, e.g. the CartSuggestions of the chosen rows. */
static PyObject *Nodes_records(Nodes *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyType_Check(args[0]) || !PyType_IsSubtype((PyTypeObject *)args[0], &PyTuple_Type) ||
        !PyList_Check(args[1]) || !PyTuple_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "records(type: tuple subclass, rows: list, columns: tuple of lists)");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)args[0];
    PyObject *rows = args[1], *cols = args[2];
    Py_ssize_t n = PyList_GET_SIZE(rows), m = PyTuple_GET_SIZE(cols);
    for (Py_ssize_t k = 0; k < m; k++) {
        PyObject *col = PyTuple_GET_ITEM(cols, k);
        if (!PyList_Check(col) || PyList_GET_SIZE(col) != n) {
            PyErr_SetString(PyExc_ValueError, "records: every column must be a list as long as rows");
            return NULL;
        }
    }
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t t = as_int64(PyList_GET_ITEM(rows, i));
        PyObject *item = NULL;
        if (t == INT64_MIN && PyErr_Occurred()) goto fail;
        if (t < 0 || t >= self->n) {
            corrupt("product row", t);
            goto fail;
        }
        if (!(item = new_record(type, 4 + m))) goto fail;
        for (Py_ssize_t k = 0; k < m; k++)
            PyTuple_SET_ITEM(item, 4 + k, Py_NewRef(PyList_GET_ITEM(PyTuple_GET_ITEM(cols, k), i)));
        if (fill_product(self, item, t) < 0 || !(item = seal(type, item))) {
            Py_XDECREF(item);
            goto fail;
        }
        PyList_SET_ITEM(out, i, item);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
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
    {"records", (PyCFunction)(void (*)(void))Nodes_records, METH_FASTCALL,
     "records(type, rows, columns) -> list of type(id, title, category, price, *columns[i])"},
    {"cart", (PyCFunction)(void (*)(void))Nodes_cart, METH_FASTCALL,
     "cart(suggestion, contribution, comp, subs, ids, k, min_score, plain, more) -> (known, unknown, items) | None"},
    {"take_ids", (PyCFunction)Nodes_take_ids, METH_O, "ids of a list of rows"},
    {"take_titles", (PyCFunction)Nodes_take_titles, METH_O, "titles of a list of rows"},
    {NULL},
};

PyTypeObject NodesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "serve._fastindex.Nodes",
    .tp_doc = "Nodes(table, ids_blob, ids_ends, titles_blob, titles_ends, cat_of, price, categories, reasons, record)",
    .tp_basicsize = sizeof(Nodes),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Nodes_init,
    .tp_dealloc = (destructor)Nodes_dealloc,
    .tp_methods = Nodes_methods,
};
