/* serve._fastindex, third part: Nodes.cart, GraphIndex.cart_addons in one call. The rules are those of the
 * Python reference in serve/index.py (cart_addons, _diversify) and serve/rows.py (sum_by_target, gather),
 * which stays the fallback and what the tests compare this with, answer by answer:
 *   banned = cart rows and every substitute of a cart row; per cart item its candidate list (the own CSR
 *   row when the request has no filters and the row has edges, else what `more(row)` returns, computed in
 *   Python); totals = 0.0 + scores in list order per target not banned; cut at min_score (when > 0); sort
 *   by total descending, then row ascending; at most ceil(k/2) per category id (uncategorized: one bucket),
 *   the best skipped filling up to k; per chosen target its contributions in list then position order,
 *   sorted stably by score descending then cart item.
 * Every row read from a buffer or a candidate list is range-checked (CorruptIndex, never a stray read).
 * A NaN total (impossible from a built index) returns None: the caller then answers in Python, whose
 * sort order with NaN this does not copy. */
#include "_fastindex.h"
#include <math.h>

/* --- an open-addressing map int64 -> int64 (keys >= -1; INT64_MIN = empty slot) -------------------------- */
typedef struct {
    int64_t *key, *val;
    Py_ssize_t mask;
} Map;

static int map_init(Map *m, Py_ssize_t n) { /* room for n keys, at least half the slots empty */
    Py_ssize_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    if (!(m->key = PyMem_Malloc((size_t)cap * 2 * sizeof(int64_t)))) return PyErr_NoMemory(), -1;
    m->val = m->key + cap;
    for (Py_ssize_t i = 0; i < cap; i++) m->key[i] = INT64_MIN;
    m->mask = cap - 1;
    return 0;
}

static inline Py_ssize_t map_slot(const Map *m, int64_t k) { /* k's slot, or the empty one it would take */
    uint64_t h = (uint64_t)k * 0x9E3779B97F4A7C15ull;
    Py_ssize_t s = (Py_ssize_t)((h ^ (h >> 31)) & (uint64_t)m->mask);
    while (m->key[s] != k && m->key[s] != INT64_MIN) s = (s + 1) & m->mask;
    return s;
}

static inline int map_has(const Map *m, int64_t k) { return m->key[map_slot(m, k)] == k; }

static inline void map_put(Map *m, int64_t k, int64_t v) {
    Py_ssize_t s = map_slot(m, k);
    m->key[s] = k;
    m->val[s] = v;
}

typedef struct {
    double score;
    int64_t t, reason, via; /* via -1: direct */
    Py_ssize_t item;        /* index of the cart item (known) whose list holds it */
} Edge;

typedef struct {
    double total;
    int64_t t;
} Ranked;

typedef struct {
    PyObject *known, *unknown, **sources; /* sources[i]: new ref, the source label of item i's list */
    int64_t *rows;
    Py_ssize_t n_known, n_edges, cap_edges, *bounds; /* bounds: comp lo, hi, subs lo, hi per item */
    Edge *edges;
    Ranked *ranked;
    Map banned, totals, cats, at;
    Py_ssize_t *hits, *first;
    char *mark;
} Cart;

static void cart_free(Cart *c) {
    Py_XDECREF(c->known);
    Py_XDECREF(c->unknown);
    if (c->sources)
        for (Py_ssize_t i = 0; i < c->n_known; i++) Py_XDECREF(c->sources[i]);
    void *blocks[] = {c->sources, c->rows, c->bounds, c->edges, c->ranked, c->banned.key, c->totals.key,
                      c->cats.key, c->at.key, c->hits, c->first, c->mark};
    for (size_t i = 0; i < sizeof blocks / sizeof *blocks; i++) PyMem_Free(blocks[i]);
}

static void *alloc(size_t n, size_t size) {
    void *p = PyMem_Calloc(n ? n : 1, size);
    if (!p) PyErr_NoMemory();
    return p;
}

static int add_edges(Cart *c, Py_ssize_t n) {
    if (c->n_edges + n <= c->cap_edges) return 0;
    Py_ssize_t cap = c->cap_edges * 2 > c->n_edges + n ? c->cap_edges * 2 : c->n_edges + n + 64;
    Edge *e = PyMem_Realloc(c->edges, (size_t)cap * sizeof(Edge));
    if (!e) return PyErr_NoMemory(), -1;
    c->edges = e;
    c->cap_edges = cap;
    return 0;
}

/* Item i's own CSR edges lo..hi (checked by rows_bounds). */
static int direct_list(Cart *c, Nodes *self, Rows *comp, Py_ssize_t i, Py_ssize_t lo, Py_ssize_t hi) {
    static PyObject *direct;
    if (!direct && !(direct = PyUnicode_InternFromString("direct"))) return -1;
    if (add_edges(c, hi - lo) < 0) return -1;
    c->sources[i] = Py_NewRef(direct);
    for (Py_ssize_t e = lo; e < hi; e++) {
        Edge *x = &c->edges[c->n_edges];
        if ((x->t = rows_target(comp, e)) < 0) return -1;
        if (x->t >= self->n) return corrupt("target row", x->t), -1;
        if (rows_raw(comp, e, &x->score) < 0) return -1;
        x->reason = col_int(&comp->reason, e);
        if (x->reason < 0 || x->reason >= PyTuple_GET_SIZE(self->reasons)) return corrupt("reason id", x->reason), -1;
        x->via = -1;
        x->item = i;
        c->n_edges++;
    }
    return 0;
}

static int int_at(PyObject *list, Py_ssize_t j, int64_t lo, int64_t hi, const char *what, int64_t *out) {
    long long v = PyLong_AsLongLong(PyList_GET_ITEM(list, j));
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < lo || v >= hi) return corrupt(what, v), -1;
    *out = v;
    return 0;
}

/* Item i's list as `more(row)` computes it (fallbacks, filters): copied out, every row checked. */
static int other_list(Cart *c, Nodes *self, PyObject *more, Py_ssize_t i) {
    PyObject *row = PyLong_FromLongLong(c->rows[i]), *got, *dst, *score, *reason, *via;
    if (!row) return -1;
    got = PyObject_CallOneArg(more, row);
    Py_DECREF(row);
    if (!got) return -1;
    int ok = -1;
    if (candidate_tuple(got, &dst, &score, &reason, &via) < 0) goto done;
    Py_ssize_t n = PyList_GET_SIZE(dst);
    if (add_edges(c, n) < 0) goto done;
    c->sources[i] = Py_NewRef(PyTuple_GET_ITEM(got, 0));
    for (Py_ssize_t j = 0; j < n; j++) {
        Edge *x = &c->edges[c->n_edges];
        if (int_at(dst, j, 0, self->n, "target row", &x->t) < 0 ||
            int_at(reason, j, 0, PyTuple_GET_SIZE(self->reasons), "reason id", &x->reason) < 0)
            goto done;
        if (via == Py_None) x->via = -1;
        else if (int_at(via, j, -1, self->n, "via row", &x->via) < 0) goto done;
        x->score = PyFloat_AsDouble(PyList_GET_ITEM(score, j));
        if (x->score == -1.0 && PyErr_Occurred()) goto done;
        x->item = i;
        c->n_edges++;
    }
    ok = 0;
done:
    Py_DECREF(got);
    return ok;
}

/* ids -> rows (known, unknown), then the banned set and every item's list */
static int read_cart(Cart *c, Nodes *self, Rows *comp, Rows *subs, PyObject *ids, int plain, PyObject *more) {
    Py_ssize_t n = PyList_GET_SIZE(ids), n_banned = 0;
    if (!(c->known = PyList_New(0)) || !(c->unknown = PyList_New(0)) || !(c->rows = alloc(n, sizeof(int64_t))) ||
        !(c->sources = alloc(n, sizeof(PyObject *))) || !(c->bounds = alloc(n, 4 * sizeof(Py_ssize_t))))
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *id = PyList_GET_ITEM(ids, i);
        Py_ssize_t row = nodes_find(self, id);
        if (row == -2 || PyList_Append(row < 0 ? c->unknown : c->known, id) < 0) return -1;
        if (row >= 0) {
            c->rows[c->n_known++] = row;
            if (row < comp->n_rows) col_prefetch(&comp->indptr, row);
            if (row < subs->n_rows) col_prefetch(&subs->indptr, row);
        }
    }
    Py_ssize_t *b = c->bounds;
    for (Py_ssize_t i = 0; i < c->n_known; i++, b += 4) {
        if (rows_bounds(comp, c->rows[i], &b[0], &b[1]) < 0 || rows_bounds(subs, c->rows[i], &b[2], &b[3]) < 0)
            return -1;
        if (b[3] > b[2]) col_prefetch(&subs->dst, b[2]);
        if (b[1] > b[0]) {
            col_prefetch(&comp->dst, b[0]);
            col_prefetch(&comp->score, b[0]);
            col_prefetch(&comp->reason, b[0]);
        }
        n_banned += 1 + b[3] - b[2];
    }
    if (map_init(&c->banned, n_banned) < 0) return -1;
    b = c->bounds;
    for (Py_ssize_t i = 0; i < c->n_known; i++, b += 4) {
        map_put(&c->banned, c->rows[i], 0);
        for (Py_ssize_t e = b[2]; e < b[3]; e++) {
            int64_t t = rows_target(subs, e);
            if (t < 0) return -1;
            map_put(&c->banned, t, 0);
        }
    }
    b = c->bounds;
    for (Py_ssize_t i = 0; i < c->n_known; i++, b += 4)
        if ((plain && b[1] > b[0] ? direct_list(c, self, comp, i, b[0], b[1]) : other_list(c, self, more, i)) < 0)
            return -1;
    return 0;
}

static int by_total(const void *pa, const void *pb) { /* total descending, then row ascending */
    const Ranked *a = pa, *b = pb;
    if (a->total != b->total) return a->total > b->total ? -1 : 1;
    return (a->t > b->t) - (a->t < b->t);
}

/* totals of targets not banned, cut at min_score, sorted; 1 when a total is NaN, -1 on error */
static int rank(Cart *c, double min_score, Py_ssize_t *n_ranked) {
    Py_ssize_t n = 0;
    if (map_init(&c->totals, c->n_edges) < 0 || !(c->ranked = alloc(c->n_edges, sizeof(Ranked)))) return -1;
    for (Py_ssize_t e = 0; e < c->n_edges; e++) {
        const Edge *x = &c->edges[e];
        if (map_has(&c->banned, x->t)) continue;
        Py_ssize_t s = map_slot(&c->totals, x->t);
        if (c->totals.key[s] != x->t) {
            c->totals.key[s] = x->t;
            c->totals.val[s] = n;
            c->ranked[n].t = x->t;
            c->ranked[n++].total = 0.0;
        }
        c->ranked[c->totals.val[s]].total += x->score;
    }
    Py_ssize_t kept = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        if (isnan(c->ranked[j].total)) return 1;
        if (min_score <= 0 || c->ranked[j].total >= min_score) c->ranked[kept++] = c->ranked[j];
    }
    qsort(c->ranked, (size_t)kept, sizeof(Ranked), by_total);
    *n_ranked = kept;
    return 0;
}

/* GraphIndex._diversify: c->mark[j] = 1 for the chosen ranked[j]; returns how many, -1 on error */
static Py_ssize_t diversify(Cart *c, Nodes *self, Py_ssize_t n, Py_ssize_t k) {
    Py_ssize_t cap = k / 2 + k % 2, chosen = 0, skipped = 0, j = 0, n_cats = 0;
    if (k <= 0 || n == 0) return 0;
    if (map_init(&c->cats, n) < 0 || !(c->mark = alloc(n, 1))) return -1;
    for (Py_ssize_t p = 0; p < n && p < 2 * k; p++) col_prefetch(&self->cat_of, c->ranked[p].t);
    for (; j < n && chosen < k; j++) {
        int64_t cat = col_int(&self->cat_of, c->ranked[j].t);
        if (cat < -1 || cat >= PyTuple_GET_SIZE(self->cats)) return corrupt("category id", cat), -1;
        Py_ssize_t s = map_slot(&c->cats, cat);
        if (c->cats.key[s] != cat) {
            c->cats.key[s] = cat;
            c->cats.val[s] = 0;
            n_cats++;
        }
        if (c->cats.val[s] < cap) {
            c->cats.val[s]++;
            c->mark[j] = 1;
            chosen++;
        } else {
            c->mark[j] = 2;
            skipped++;
        }
    }
    for (Py_ssize_t p = 0; p < j && chosen < k && skipped; p++) /* the best skipped fill up to k */
        if (c->mark[p] == 2) {
            c->mark[p] = 1;
            chosen++;
        }
    (void)n_cats;
    return chosen;
}

static inline int before(const Edge *a, const Edge *b) {
    return a->score > b->score || (a->score == b->score && a->item < b->item);
}

/* The CartSuggestion of ranked[j], its contributions c->hits[first[q]..first[q+1]] */
static PyObject *suggestion(Cart *c, Nodes *self, PyTypeObject *sugg, PyTypeObject *contrib, Py_ssize_t j,
                            Py_ssize_t q) {
    Py_ssize_t lo = c->first[q], hi = c->first[q + 1];
    PyObject *item = new_record(sugg, 6), *with = PyTuple_New(hi - lo), *x;
    if (!item || !with) goto fail;
    for (Py_ssize_t h = lo; h < hi; h++) {
        const Edge *e = &c->edges[c->hits[h]];
        PyObject *rec = new_record(contrib, 5);
        if (!rec) goto fail;
        PyTuple_SET_ITEM(with, h - lo, rec);
        PyTuple_SET_ITEM(rec, 0, Py_NewRef(PyList_GET_ITEM(c->known, e->item)));
        if (!(x = PyFloat_FromDouble(e->score))) goto fail;
        PyTuple_SET_ITEM(rec, 1, x);
        PyTuple_SET_ITEM(rec, 2, Py_NewRef(PyTuple_GET_ITEM(self->reasons, e->reason)));
        PyTuple_SET_ITEM(rec, 3, Py_NewRef(c->sources[e->item]));
        if (!(x = e->via < 0 ? Py_NewRef(Py_None) : string_at(&self->ids_blob, &self->ids_ends, e->via))) goto fail;
        PyTuple_SET_ITEM(rec, 4, x);
        PyTuple_SET_ITEM(with, h - lo, NULL); /* seal may replace rec */
        if (!(rec = seal(contrib, rec))) goto fail;
        PyTuple_SET_ITEM(with, h - lo, rec);
    }
    if (fill_product(self, item, c->ranked[j].t) < 0 || !(x = PyFloat_FromDouble(c->ranked[j].total))) goto fail;
    PyTuple_SET_ITEM(item, 4, x);
    PyTuple_SET_ITEM(item, 5, with);
    return seal(sugg, item);
fail:
    Py_XDECREF(item);
    Py_XDECREF(with);
    return NULL;
}

/* the records of the chosen (c->mark == 1), in ranked order */
static PyObject *records(Cart *c, Nodes *self, PyTypeObject *sugg, PyTypeObject *contrib, Py_ssize_t n,
                         Py_ssize_t n_chosen) {
    PyObject *out = PyTuple_New(n_chosen);
    if (!out || n_chosen == 0) return out;
    Py_ssize_t q = 0, n_hits = 0, *fill = NULL;
    if (map_init(&c->at, n_chosen) < 0 || !(c->first = alloc(n_chosen + 1, sizeof(Py_ssize_t)))) goto fail;
    for (Py_ssize_t j = 0; j < n; j++)
        if (c->mark[j] == 1) {
            prefetch_product(self, c->ranked[j].t);
            map_put(&c->at, c->ranked[j].t, q++);
        }
    for (Py_ssize_t e = 0; e < c->n_edges; e++) { /* gather: count, then place in list, position order */
        Py_ssize_t s = map_slot(&c->at, c->edges[e].t);
        if (c->at.key[s] == c->edges[e].t) c->first[c->at.val[s] + 1]++, n_hits++;
    }
    for (q = 0; q < n_chosen; q++) c->first[q + 1] += c->first[q];
    if (!(fill = alloc(n_chosen, sizeof(Py_ssize_t))) || !(c->hits = alloc(n_hits, sizeof(Py_ssize_t)))) goto fail;
    for (Py_ssize_t e = 0; e < c->n_edges; e++) {
        Py_ssize_t s = map_slot(&c->at, c->edges[e].t);
        if (c->at.key[s] != c->edges[e].t) continue;
        int64_t at = c->at.val[s];
        c->hits[c->first[at] + fill[at]++] = e;
        if (c->edges[e].via >= 0) col_prefetch(&self->ids_ends, c->edges[e].via);
    }
    for (q = 0; q < n_chosen; q++) /* stable insertion sort: score descending, then cart item */
        for (Py_ssize_t h = c->first[q] + 1; h < c->first[q + 1]; h++) {
            Py_ssize_t x = c->hits[h], g = h;
            for (; g > c->first[q] && before(&c->edges[x], &c->edges[c->hits[g - 1]]); g--) c->hits[g] = c->hits[g - 1];
            c->hits[g] = x;
        }
    q = 0;
    for (Py_ssize_t j = 0; j < n; j++)
        if (c->mark[j] == 1) {
            PyObject *item = suggestion(c, self, sugg, contrib, j, q);
            if (!item) goto fail;
            PyTuple_SET_ITEM(out, q++, item);
        }
    PyMem_Free(fill);
    return out;
fail:
    PyMem_Free(fill);
    Py_DECREF(out);
    return NULL;
}

static int record_type(PyObject *t) { return PyType_Check(t) && PyType_IsSubtype((PyTypeObject *)t, &PyTuple_Type); }

/* cart(suggestion, contribution, comp, subs, ids, k, min_score, plain, more) -> (known, unknown, items) or
 * None (answer in Python). ids: the cart, duplicates already dropped. plain: the request has no filters
 * (then an item with own edges reads them here); more(row): the candidate list of any other item. */
PyObject *Nodes_cart(Nodes *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9 || !record_type(args[0]) || !record_type(args[1]) || !PyObject_TypeCheck(args[2], &RowsType) ||
        !PyObject_TypeCheck(args[3], &RowsType) || !PyList_Check(args[4]) || !PyCallable_Check(args[8])) {
        PyErr_SetString(PyExc_TypeError,
                        "cart(suggestion: type, contribution: type, comp: Rows, subs: Rows, ids: list, k: int, "
                        "min_score: float, plain: bool, more: callable)");
        return NULL;
    }
    Py_ssize_t k = PyNumber_AsSsize_t(args[5], PyExc_OverflowError), n_ranked = 0, n_chosen;
    double min_score = PyFloat_AsDouble(args[6]);
    int plain = PyObject_IsTrue(args[7]), nan;
    if ((k == -1 || min_score == -1.0 || plain < 0) && PyErr_Occurred()) return NULL;
    Cart c;
    memset(&c, 0, sizeof c);
    PyObject *result = NULL, *items = NULL, *known = NULL, *unknown = NULL;
    if (read_cart(&c, self, (Rows *)args[2], (Rows *)args[3], args[4], plain, args[8]) < 0) goto done;
    if ((nan = rank(&c, min_score, &n_ranked)) != 0) {
        if (nan > 0) result = Py_NewRef(Py_None);
        goto done;
    }
    if ((n_chosen = diversify(&c, self, n_ranked, k)) < 0) goto done;
    if (!(items = records(&c, self, (PyTypeObject *)args[0], (PyTypeObject *)args[1], n_ranked, n_chosen))) goto done;
    if ((known = PyList_AsTuple(c.known)) && (unknown = PyList_AsTuple(c.unknown)))
        result = PyTuple_Pack(3, known, unknown, items);
done:
    Py_XDECREF(known);
    Py_XDECREF(unknown);
    Py_XDECREF(items);
    cart_free(&c);
    return result;
}
