/*
 * _scan.h -- what the two halves of iped.audit._scan share (one extension module, two files):
 * _scan.c, the auditd log block scanner and the 1420 parser (and the module itself), and
 * _netlink.c, the netlink reader and the follower's grouping, which build the same records
 * and parse 1420 bodies with _scan.c's access_of. Internal: nothing here is exported from the
 * shared object.
 */
#ifndef IPED_AUDIT_SCAN_H
#define IPED_AUDIT_SCAN_H

#ifndef PY_SSIZE_T_CLEAN
#define PY_SSIZE_T_CLEAN
#endif
#include <Python.h>
#include <string.h>

#define IPED_INTERNAL __attribute__((visibility("hidden")))

typedef struct {
    const char *p;
    Py_ssize_t n;
} span;

/* the span equals a string literal */
#define span_is(s, lit) ((s).n == (Py_ssize_t)sizeof(lit) - 1 && memcmp((s).p, lit, sizeof(lit) - 1) == 0)

/* an ASCII str of [p, p+n) */
static inline PyObject *str_of(const char *p, Py_ssize_t n)
{
    PyObject *o = PyUnicode_New(n, 127);
    if (o != NULL && n > 0)
        memcpy(PyUnicode_DATA(o), p, (size_t)n);
    return o;
}

/* a tuple or tuple subclass instance (RawRecord, IpeAccess...) of n items, stealing them */
static inline PyObject *build(PyTypeObject *type, Py_ssize_t n, PyObject **items)
{
    PyObject *o = NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (items[i] == NULL)
            goto fail;
    o = type == &PyTuple_Type ? PyTuple_New(n) : type->tp_alloc(type, n);
    if (o == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(o, i, items[i]);
    /* its items are str, int, bool, None, tuples built here or an Event whose __dict__ holds
     * such: no cycle can pass through it, so the collector need not look at it */
    PyObject_GC_UnTrack(o);
    return o;
fail:
    for (Py_ssize_t i = 0; i < n; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

/* ---- the scanner's state: record types, the last value of each field ---- */

enum { S_OP, S_HOOK, S_ACOMM, S_PATH, S_DEV, S_RULE, S_ARCH, S_SCOMM, S_EXE, S_TITLE, N_STR };
enum { I_SEC, I_NR, I_EXIT, I_PPID, I_UID, I_AUID, I_SES, N_INT };

typedef struct {
    PyTypeObject *raw, *access, *syscall, *proctitle, *event;
    PyObject *str[N_STR];   /* the last value of each str field */
    PyObject *num[N_INT];   /* ... and of some int fields */
    long long num_v[N_INT];
    PyObject *title;        /* the Proctitle of str[S_TITLE], the last PROCTITLE body */
} scanner;

/* interned "is_ipe": an Event cached_property every consumer asks (_scan.c) */
IPED_INTERNAL extern PyObject *key_is_ipe;

/* records.parse_access on its regex's fast case; None to leave the body to Python (_scan.c) */
IPED_INTERNAL PyObject *access_of(scanner *sc, span body);

/* A complete group.Event of IPE records, is_ipe set, and typed unless NULL (_scan.c) */
IPED_INTERNAL PyObject *complete_event(PyTypeObject *type, PyObject *const stamp[3], PyObject *records,
                                       PyObject *typed);

/* the module functions of _netlink.c, in _scan.c's method table */
IPED_INTERNAL PyObject *recv_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
IPED_INTERNAL PyObject *group_runs(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif
