/* Shared by the two files of serve._fastindex (see _fastindex.c): the column views, the CSR reader's
 * layout and the checks both halves use. */
#ifndef SHELFGRAPH_FASTINDEX_H
#define SHELFGRAPH_FASTINDEX_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

extern PyObject *CorruptIndex;
extern PyTypeObject RowsType, NodesType;

PyObject *corrupt(const char *what, long long value); /* raises CorruptIndex, returns NULL */
uint32_t crc32_of(const unsigned char *s, Py_ssize_t n);

/* --- columns: a read-only 1-D buffer and its element kind ---------------------------------------------- */
typedef struct {
    Py_buffer view;
    char kind; /* 'i' int32, 'q' int64, 'H' uint16, 'B' uint8, 'f' float32, 'd' float64 */
    Py_ssize_t n;
} Col;

int col_open(Col *c, PyObject *obj, const char *kinds, const char *name);
void col_close(Col *c);

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

int check_span(Rows *self, Py_ssize_t lo, Py_ssize_t hi);
int span_args(Rows *self, PyObject *a, PyObject *b, Py_ssize_t *lo, Py_ssize_t *hi);
PyObject *rows_score(Rows *self, Py_ssize_t i, int rounded);

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

/* raw (not rounded) score of edge i as a double; -1 on a corrupt code */
static inline int rows_raw(Rows *self, Py_ssize_t i, double *out) {
    if (!self->coded) {
        *out = col_float(&self->score, i);
        return 0;
    }
    int64_t code = col_int(&self->score, i);
    if (code >= self->raw.n) return corrupt("score code", code), -1;
    *out = col_float(&self->raw, code);
    return 0;
}

int rows_bounds(Rows *self, Py_ssize_t row, Py_ssize_t *lo, Py_ssize_t *hi);
/* (source, targets, scores, reason ids, lenders | None), lists of equal lengths; -1 + TypeError if not */
int candidate_tuple(PyObject *item, PyObject **dst, PyObject **score, PyObject **reason, PyObject **via);

/* --- Nodes: id -> row and the per-product columns a record shows (_fastnodes.c) ------------------------- */
typedef struct {
    PyObject_HEAD
    Col table, ids_blob, ids_ends, titles_blob, titles_ends, cat_of, price;
    PyObject *cats, *reasons, *empty;
    PyTypeObject *record;
    Py_ssize_t n;
} Nodes;

Py_ssize_t nodes_find(Nodes *self, PyObject *key);
PyObject *string_at(const Col *blob, const Col *ends, int64_t r);
int fill_product(Nodes *self, PyObject *item, int64_t t);
PyObject *new_record(PyTypeObject *type, Py_ssize_t n);
PyObject *seal(PyTypeObject *type, PyObject *item);
void prefetch_product(Nodes *self, int64_t t);
PyObject *Nodes_cart(Nodes *self, PyObject *const *args, Py_ssize_t nargs); /* _fastcart.c */

#endif
