/*
 * iped.audit._scan -- the block scanner of iped.audit.bulk and the 1420 parser of
 * iped.audit.records, in C; and the module, whose netlink reader and follower grouping are in
 * _netlink.c (what both use is declared in _scan.h).
 *
 * scan_block(text, RawRecord, IpeAccess, Syscall, Proctitle, Event) returns the same list as
 * bulk.scan_block_py(text): for each line of an auditd log block either
 *
 *   - the line itself (a str without its "\n"), or
 *   - for a whole IPE access event in the kernel's shape (1420, SYSCALL, any records between,
 *     PROCTITLE, EOE, one stamp) the tuple
 *       (sec, msec, serial, (raw_1420, raw_syscall, raw_proctitle), middle, eoe_body, typed, event)
 *     where the raw_* are RawRecords, middle is the text of the records between (each line
 *     with its "\n", "" if none), and typed is (access, syscall, proctitle), the typed
 *     records that records.parse_access/parse_syscall/parse_proctitle give -- or None when a
 *     body is not in the common form handled here (unquoted untrusted strings, numbers that
 *     are not plain decimal, a proctitle that is not plain hex...): the caller then runs the
 *     Python parsers, so this file only has to be right on the subset it accepts. When the
 *     records are typed and there are none between SYSCALL and PROCTITLE, event is the
 *     group.Event that bulk.iter_block builds for the event if the grouper takes it whole
 *     (object.__new__(Event) with its __dict__ set: sec, msec, serial, records, complete,
 *     is_ipe, typed); else None.
 *
 * Two things make it fast besides being C: values that repeat from one event to the next
 * (comm, exe, rule, uid, the proctitle...) are shared, as the last value of each field is
 * kept and reused when the next one is equal; and every tuple built here holds only str,
 * int, bool, None, such tuples or an Event of them, so no cycle can pass through it and it
 * is untracked by the garbage collector at once (what the collector does itself on its first
 * pass for tuples of atoms) -- a block's objects then cost no collection time.
 *
 * It returns None for text that is not plain ASCII or holds "\r" or "\x1d" (auditd's
 * enriched format): the Python scanner handles those. A last line without "\n" is dropped,
 * as the Python scanner's findall does.
 *
 * Each check below names the part of bulk._EVENT or records._ACCESS_RE/_SYSCALL_RE it
 * mirrors; tests/audit/test_bulk_scan.py compares the two scanners item by item.
 */
#include "_scan.h"

#define UNSET_ID 4294967295LL /* (u32)-1: auid, ses or uid not set */

static PyObject *type_1420, *type_1300, *type_1327; /* the RawRecord type numbers */
/* interned names: an Event's __dict__ keys, "__dict__" itself; and () */
static PyObject *key_sec, *key_msec, *key_serial, *key_records, *key_complete, *key_typed, *key_dict, *no_args;
PyObject *key_is_ipe;

/* the first space in [p, e), or e: values are short, a loop beats a call to memchr */
static inline const char *to_space(const char *p, const char *e)
{
    while (p < e && *p != ' ')
        p++;
    return p;
}

/* -?[0-9]{1,18}: what int() surely reads the same; anything else is left to Python */
static int small_int(span s, long long *out)
{
    const char *p = s.p;
    Py_ssize_t n = s.n;
    int neg = 0;
    long long v = 0;

    if (n > 0 && *p == '-') {
        neg = 1;
        p++;
        n--;
    }
    if (n < 1 || n > 18)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(p[i] - '0');
        if (d > 9)
            return 0;
        v = v * 10 + d;
    }
    *out = neg ? -v : v;
    return 1;
}

/* [0-9]+ of a stamp as an int, any length */
static PyObject *stamp_int(span s)
{
    long long v;
    if (small_int(s, &v))
        return PyLong_FromLongLong(v);
    PyObject *text = str_of(s.p, s.n);
    if (text == NULL)
        return NULL;
    PyObject *o = PyLong_FromUnicodeObject(text, 10);
    Py_DECREF(text);
    return o;
}

/* ---- the scanner's state: the last value of each field (scanner: _scan.h) ---- */

static void scanner_clear(scanner *sc)
{
    for (int i = 0; i < N_STR; i++)
        Py_CLEAR(sc->str[i]);
    for (int i = 0; i < N_INT; i++)
        Py_CLEAR(sc->num[i]);
    Py_CLEAR(sc->title);
}

static int same_str(PyObject *o, const char *p, Py_ssize_t n)
{
    return o != NULL && PyUnicode_GET_LENGTH(o) == n && memcmp(PyUnicode_DATA(o), p, (size_t)n) == 0;
}

/* hits and lookups of the last-value caches below, every scanner together (cache_stats()):
 * each keeps one value per field, so they are bounded whatever the input */
static unsigned long long str_hits[N_STR], str_lookups[N_STR], int_hits[N_INT], int_lookups[N_INT];

/* [p, p+n) as a str, the field's last one if equal */
static PyObject *cached_str(scanner *sc, int slot, const char *p, Py_ssize_t n)
{
    str_lookups[slot]++;
    if (same_str(sc->str[slot], p, n)) {
        str_hits[slot]++;
        return Py_NewRef(sc->str[slot]);
    }
    PyObject *o = str_of(p, n);
    if (o != NULL)
        Py_XSETREF(sc->str[slot], Py_NewRef(o));
    return o;
}

static PyObject *cached_int(scanner *sc, int slot, long long v)
{
    int_lookups[slot]++;
    if (sc->num[slot] != NULL && sc->num_v[slot] == v) {
        int_hits[slot]++;
        return Py_NewRef(sc->num[slot]);
    }
    PyObject *o = PyLong_FromLongLong(v);
    if (o != NULL) {
        Py_XSETREF(sc->num[slot], Py_NewRef(o));
        sc->num_v[slot] = v;
    }
    return o;
}

/* ---- record lines (bulk._EVENT) ---- */

/* One line [p, e) (e at its "\n") of the form "type=TOKEN msg=audit(STAMP):[ ]BODY" with the
 * given stamp (the pattern's backreference); TOKEN is [^ \n]+. */
static int stamped_line(const char *p, const char *e, span stamp, span *token, span *body)
{
    const char *sp;
    Py_ssize_t need = 11 + stamp.n + 2; /* " msg=audit(" STAMP "):" */

    if (e - p < 5 || memcmp(p, "type=", 5) != 0)
        return 0;
    p += 5;
    sp = to_space(p, e);
    if (sp == e || sp == p)
        return 0;
    token->p = p;
    token->n = sp - p;
    if (e - sp < need || memcmp(sp, " msg=audit(", 11) != 0 || memcmp(sp + 11, stamp.p, (size_t)stamp.n) != 0 ||
        sp[11 + stamp.n] != ')' || sp[12 + stamp.n] != ':')
        return 0;
    p = sp + need;
    if (p < e && *p == ' ') /* ": ?" */
        p++;
    body->p = p;
    body->n = e - p;
    return 1;
}

/* the first line: "type=(1420|IPE_ACCESS|UNKNOWN[1420]) msg=audit(S.MS:N): BODY" */
static int access_line(const char *p, const char *e, span *stamp, span *sec, span *msec, span *serial, span *body)
{
    const char *q;

    if (e - p < 5 || memcmp(p, "type=", 5) != 0)
        return 0;
    p += 5;
    q = to_space(p, e);
    if (q == e)
        return 0;
    span token = {p, q - p};
    if (!(span_is(token, "1420") || span_is(token, "IPE_ACCESS") || span_is(token, "UNKNOWN[1420]")))
        return 0;
    if (e - q < 11 || memcmp(q, " msg=audit(", 11) != 0)
        return 0;
    q += 11;
    stamp->p = q;
    span *parts[3] = {sec, msec, serial};
    const char seps[3] = {'.', ':', ')'};
    const Py_ssize_t max_digits[3] = {11, 3, 20}; /* records.STAMP_DIGITS: longer is left to Python */
    for (int i = 0; i < 3; i++) {
        const char *d = q;
        while (q < e && (unsigned)(*q - '0') <= 9)
            q++;
        if (q == d || q == e || *q != seps[i] || q - d > max_digits[i])
            return 0;
        parts[i]->p = d;
        parts[i]->n = q - d;
        q++;
    }
    stamp->n = q - 1 - stamp->p;
    if (e - q < 2 || q[0] != ':' || q[1] != ' ')
        return 0;
    body->p = q + 2;
    body->n = e - body->p;
    return 1;
}

typedef struct {
    span stamp, sec, msec, serial, access, syscall, middle, proctitle, eoe;
    const char *end; /* just past the EOE line */
} event_match;

/* the line starting at p, if whole: its end (the "\n") in *e */
static int next_line(const char *p, const char *end, const char **e)
{
    if (p >= end)
        return 0;
    *e = memchr(p, '\n', (size_t)(end - p));
    return *e != NULL;
}

/* bulk._EVENT at p: 1420, SYSCALL, the fewest other records (lazy "*?") after which come
 * PROCTITLE and EOE, all with the first line's stamp */
static int match_event(const char *p, const char *end, event_match *m)
{
    const char *e;
    span token, body;

    if (!next_line(p, end, &e) || !access_line(p, e, &m->stamp, &m->sec, &m->msec, &m->serial, &m->access))
        return 0;
    p = e + 1;
    if (!next_line(p, end, &e) || !stamped_line(p, e, m->stamp, &token, &m->syscall) ||
        !(span_is(token, "SYSCALL") || span_is(token, "1300")))
        return 0;
    p = e + 1;
    m->middle.p = p;
    for (;;) {
        if (!next_line(p, end, &e) || !stamped_line(p, e, m->stamp, &token, &body))
            return 0;
        if (span_is(token, "PROCTITLE") || span_is(token, "1327")) {
            const char *e2;
            span token2;
            if (next_line(e + 1, end, &e2) && stamped_line(e + 1, e2, m->stamp, &token2, &m->eoe) &&
                (span_is(token2, "EOE") || span_is(token2, "1320"))) {
                m->middle.n = p - m->middle.p;
                m->proctitle = body;
                m->end = e2 + 1;
                return 1;
            }
        }
        /* not the end yet: this line is one of the middle records, "type=(?!EOE |1320 )" */
        if (span_is(token, "EOE") || span_is(token, "1320"))
            return 0;
        p = e + 1;
    }
}

/* ---- typed records (records._ACCESS_RE, records._SYSCALL_RE, parse_proctitle) ---- */

/* "KEY=" at *c, its value up to the next space or the end ([^ ]*); *c moves past the value.
 * Always inlined: with the key's length a constant, the compiler compares the key in place. */
static inline __attribute__((always_inline)) int field_n(const char **c, const char *e, const char *key, size_t n,
                                                         span *value)
{
    const char *v;

    if ((size_t)(e - *c) < n || memcmp(*c, key, n) != 0)
        return 0;
    v = *c + n;
    *c = to_space(v, e);
    value->p = v;
    value->n = *c - v;
    return 1;
}
#define field(c, e, key, value) field_n(c, e, key, sizeof(key) - 1, value)

/* "KEY=value " */
#define field_sp(c, e, key, value) (field(c, e, key, value) && *(c) < (e) && *(*(c))++ == ' ')

/* a quoted untrusted string ("text" -> text); 0 for the hex and "?" forms */
static int quoted(span v, span *out)
{
    if (v.n < 2 || v.p[0] != '"' || v.p[v.n - 1] != '"')
        return 0;
    out->p = v.p + 1;
    out->n = v.n - 2;
    return 1;
}

static PyObject *bool_of(int b)
{
    return Py_NewRef(b ? Py_True : Py_False);
}

/* an id, None if unset */
static PyObject *id_of(scanner *sc, int slot, long long v)
{
    return v == UNSET_ID ? Py_NewRef(Py_None) : cached_int(sc, slot, v);
}

/* records.parse_access on its regex's fast case; None to leave the body to Python */
PyObject *access_of(scanner *sc, span body)
{
    const char *c = body.p, *e = body.p + body.n;
    span op, hook, enf, pid, comm, path, dev, ino, qcomm, qpath, qdev;
    long long pid_n, ino_n;

    if (!(field_sp(&c, e, "ipe_op=", &op) && field_sp(&c, e, "ipe_hook=", &hook) &&
          field_sp(&c, e, "enforcing=", &enf) && field_sp(&c, e, "pid=", &pid) && field_sp(&c, e, "comm=", &comm) &&
          field_sp(&c, e, "path=", &path) && field_sp(&c, e, "dev=", &dev) && field(&c, e, "ino=", &ino)) ||
        e - c < 7 || memcmp(c, " rule=\"", 7) != 0 || !small_int(pid, &pid_n) || !small_int(ino, &ino_n) ||
        !quoted(comm, &qcomm) || !quoted(path, &qpath) || !quoted(dev, &qdev))
        return Py_NewRef(Py_None);
    c += 7;
    Py_ssize_t rule_n = e - c;
    if (rule_n > 0 && c[rule_n - 1] == '"')
        rule_n--;
    PyObject *items[9] = {
        cached_str(sc, S_OP, op.p, op.n),
        cached_str(sc, S_HOOK, hook.p, hook.n),
        span_is(enf, "1") ? bool_of(1) : span_is(enf, "0") ? bool_of(0) : Py_NewRef(Py_None),
        PyLong_FromLongLong(pid_n),
        cached_str(sc, S_ACOMM, qcomm.p, qcomm.n),
        cached_str(sc, S_PATH, qpath.p, qpath.n),
        cached_str(sc, S_DEV, qdev.p, qdev.n),
        PyLong_FromLongLong(ino_n),
        cached_str(sc, S_RULE, c, rule_n),
    };
    return build(sc->access, 9, items);
}

/* records.parse_syscall on its regex's fast case; None to leave the body to Python */
static PyObject *syscall_of(scanner *sc, span body)
{
    const char *c = body.p, *e = body.p + body.n;
    span arch, nr, success, exit_, ppid, pid, auid, uid, ses, comm, exe, skip, qcomm, qexe;
    long long nr_n, exit_n, ppid_n, pid_n, auid_n, uid_n, ses_n;

    if (!(field_sp(&c, e, "arch=", &arch) && field_sp(&c, e, "syscall=", &nr)))
        return Py_NewRef(Py_None);
    if (e - c >= 4 && memcmp(c, "per=", 4) == 0 && !field_sp(&c, e, "per=", &skip))
        return Py_NewRef(Py_None);
    if (!(field_sp(&c, e, "success=", &success) && field_sp(&c, e, "exit=", &exit_) &&
          field_sp(&c, e, "a0=", &skip) && field_sp(&c, e, "a1=", &skip) && field_sp(&c, e, "a2=", &skip) &&
          field_sp(&c, e, "a3=", &skip) && field_sp(&c, e, "items=", &skip) && field_sp(&c, e, "ppid=", &ppid) &&
          field_sp(&c, e, "pid=", &pid) && field_sp(&c, e, "auid=", &auid) && field_sp(&c, e, "uid=", &uid) &&
          field_sp(&c, e, "gid=", &skip) && field_sp(&c, e, "euid=", &skip) && field_sp(&c, e, "suid=", &skip) &&
          field_sp(&c, e, "fsuid=", &skip) && field_sp(&c, e, "egid=", &skip) && field_sp(&c, e, "sgid=", &skip) &&
          field_sp(&c, e, "fsgid=", &skip) && field_sp(&c, e, "tty=", &skip) && field_sp(&c, e, "ses=", &ses) &&
          field_sp(&c, e, "comm=", &comm) && field(&c, e, "exe=", &exe)) ||
        !small_int(nr, &nr_n) || !small_int(exit_, &exit_n) || !small_int(pid, &pid_n) ||
        !small_int(ppid, &ppid_n) || !small_int(uid, &uid_n) || !small_int(auid, &auid_n) ||
        !small_int(ses, &ses_n) || !quoted(comm, &qcomm) || !quoted(exe, &qexe))
        return Py_NewRef(Py_None);
    PyObject *items[11] = {
        cached_str(sc, S_ARCH, arch.p, arch.n),
        cached_int(sc, I_NR, nr_n),
        bool_of(span_is(success, "yes")),
        cached_int(sc, I_EXIT, exit_n),
        PyLong_FromLongLong(pid_n),
        cached_int(sc, I_PPID, ppid_n),
        id_of(sc, I_UID, uid_n),
        id_of(sc, I_AUID, auid_n),
        id_of(sc, I_SES, ses_n),
        cached_str(sc, S_SCOMM, qcomm.p, qcomm.n),
        cached_str(sc, S_EXE, qexe.p, qexe.n),
    };
    return build(sc->syscall, 11, items);
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* records.parse_proctitle for "proctitle=HEX": the arguments split at NUL, each decoded as
 * UTF-8 with backslashreplace (NUL is never part of an invalid sequence, so this is what
 * decoding the whole and splitting gives); None for any other form */
static PyObject *proctitle_of(scanner *sc, span body)
{
    static const char key[] = "proctitle=";
    const Py_ssize_t kn = sizeof(key) - 1;
    Py_ssize_t hn = body.n - kn, n, pieces = 1, start = 0, k = 0;
    unsigned char *raw;
    PyObject *argv, *items[1];

    if (body.n < kn || memcmp(body.p, key, (size_t)kn) != 0 || hn % 2 != 0)
        return Py_NewRef(Py_None);
    n = hn / 2;
    raw = PyMem_Malloc((size_t)n + 1);
    if (raw == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        int hi = hex_digit(body.p[kn + 2 * i]), lo = hex_digit(body.p[kn + 2 * i + 1]);
        if (hi < 0 || lo < 0) {
            PyMem_Free(raw);
            return Py_NewRef(Py_None);
        }
        raw[i] = (unsigned char)(hi << 4 | lo);
        pieces += raw[i] == 0;
    }
    argv = PyTuple_New(pieces);
    for (Py_ssize_t i = 0; argv != NULL && i <= n; i++) {
        if (i < n && raw[i] != 0)
            continue;
        PyObject *arg = PyUnicode_DecodeUTF8((const char *)raw + start, i - start, "backslashreplace");
        if (arg == NULL)
            Py_CLEAR(argv);
        else
            PyTuple_SET_ITEM(argv, k++, arg);
        start = i + 1;
    }
    PyMem_Free(raw);
    if (argv == NULL)
        return NULL;
    PyObject_GC_UnTrack(argv);
    items[0] = argv;
    return build(sc->proctitle, 1, items);
}

/* ---- the scan ---- */

static PyObject *raw_record(scanner *sc, PyObject *rtype, PyObject *stamp[3], PyObject *body)
{
    PyObject *items[5] = {Py_NewRef(rtype), Py_NewRef(stamp[0]), Py_NewRef(stamp[1]), Py_NewRef(stamp[2]), body};
    return build(sc->raw, 5, items);
}

/* (access, syscall, proctitle), or None if one of the bodies is left to Python;
 * title_hit: the PROCTITLE body is the last one, whose Proctitle (or None) is kept */
static PyObject *typed_of(scanner *sc, const event_match *m, int title_hit)
{
    PyObject *items[3];

    if (title_hit) {
        items[2] = Py_NewRef(sc->title);
    } else {
        items[2] = proctitle_of(sc, m->proctitle);
        if (items[2] == NULL)
            return NULL;
        Py_XSETREF(sc->title, Py_NewRef(items[2]));
    }
    if (items[2] == Py_None)
        return items[2];
    items[0] = access_of(sc, m->access);
    if (items[0] == NULL || items[0] == Py_None) {
        Py_DECREF(items[2]);
        return items[0];
    }
    items[1] = syscall_of(sc, m->syscall);
    if (items[1] == NULL || items[1] == Py_None) {
        Py_DECREF(items[0]);
        Py_DECREF(items[2]);
        return items[1];
    }
    return build(&PyTuple_Type, 3, items);
}

/* A complete group.Event of IPE records: object.__new__(Event) with its __dict__ set (Event is
 * a frozen dataclass: object.__setattr__, i.e. the generic setattr) -- sec, msec, serial,
 * records, complete=True and cached_property values (a value in __dict__ is its value):
 * is_ipe=True (each consumer asks it of every event), and typed (bulk.iter_block) unless NULL */
PyObject *complete_event(PyTypeObject *type, PyObject *const stamp[3], PyObject *records, PyObject *typed)
{
    PyObject *dict = _PyDict_NewPresized(7), *ev = NULL;

    if (dict != NULL && PyDict_SetItem(dict, key_sec, stamp[0]) == 0 && PyDict_SetItem(dict, key_msec, stamp[1]) == 0 &&
        PyDict_SetItem(dict, key_serial, stamp[2]) == 0 && PyDict_SetItem(dict, key_records, records) == 0 &&
        PyDict_SetItem(dict, key_complete, Py_True) == 0 && PyDict_SetItem(dict, key_is_ipe, Py_True) == 0 &&
        (typed == NULL || PyDict_SetItem(dict, key_typed, typed) == 0)) {
        ev = PyBaseObject_Type.tp_new(type, no_args, NULL);
        if (ev != NULL && PyObject_GenericSetAttr(ev, key_dict, dict) < 0)
            Py_CLEAR(ev);
    }
    Py_XDECREF(dict);
    return ev;
}

/* the item of a matched event (see the top of this file) */
static PyObject *event_item(scanner *sc, const event_match *m)
{
    long long sec_v;
    PyObject *stamp[3], *raw[3], *items[8];
    PyObject *item = NULL;

    /* records of consecutive events often share the second */
    stamp[0] = small_int(m->sec, &sec_v) ? cached_int(sc, I_SEC, sec_v) : stamp_int(m->sec);
    stamp[1] = stamp_int(m->msec);
    stamp[2] = stamp_int(m->serial);
    if (stamp[0] != NULL && stamp[1] != NULL && stamp[2] != NULL) {
        int title_hit = sc->title != NULL && same_str(sc->str[S_TITLE], m->proctitle.p, m->proctitle.n);
        raw[0] = raw_record(sc, type_1420, stamp, str_of(m->access.p, m->access.n));
        raw[1] = raw_record(sc, type_1300, stamp, str_of(m->syscall.p, m->syscall.n));
        raw[2] = raw_record(sc, type_1327, stamp, cached_str(sc, S_TITLE, m->proctitle.p, m->proctitle.n));
        items[0] = Py_NewRef(stamp[0]);
        items[1] = Py_NewRef(stamp[1]);
        items[2] = Py_NewRef(stamp[2]);
        items[3] = build(&PyTuple_Type, 3, raw);
        items[4] = str_of(m->middle.p, m->middle.n);
        items[5] = str_of(m->eoe.p, m->eoe.n);
        items[6] = items[3] != NULL && items[4] != NULL && items[5] != NULL ? typed_of(sc, m, title_hit) : NULL;
        if (items[6] == NULL)
            items[7] = NULL;
        else if (items[6] == Py_None || m->middle.n > 0)
            items[7] = Py_NewRef(Py_None);
        else
            items[7] = complete_event(sc->event, stamp, items[3], items[6]);
        item = build(&PyTuple_Type, 8, items);
    }
    Py_XDECREF(stamp[0]);
    Py_XDECREF(stamp[1]);
    Py_XDECREF(stamp[2]);
    return item;
}

static PyObject *scan_block(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyTypeObject *types[5];
    const char *s, *end, *p;
    Py_ssize_t n;
    PyObject *out;
    scanner sc = {0};

    (void)module;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "scan_block(text, RawRecord, IpeAccess, Syscall, Proctitle, Event)");
        return NULL;
    }
    if (!PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "scan_block: text must be a str");
        return NULL;
    }
    for (int i = 0; i < 4; i++) {
        if (!PyType_Check(args[i + 1]) || !PyType_IsSubtype((PyTypeObject *)args[i + 1], &PyTuple_Type)) {
            PyErr_SetString(PyExc_TypeError, "scan_block: the record types must be tuple subclasses");
            return NULL;
        }
        types[i] = (PyTypeObject *)args[i + 1];
    }
    if (!PyType_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "scan_block: Event must be a class");
        return NULL;
    }
    types[4] = (PyTypeObject *)args[5];
    if (!PyUnicode_IS_ASCII(args[0]))
        Py_RETURN_NONE;
    s = (const char *)PyUnicode_DATA(args[0]);
    n = PyUnicode_GET_LENGTH(args[0]);
    end = s + n;
    if (memchr(s, '\r', (size_t)n) != NULL || memchr(s, '\x1d', (size_t)n) != NULL)
        Py_RETURN_NONE;
    out = PyList_New(0);
    if (out == NULL)
        return NULL;
    sc.raw = types[0];
    sc.access = types[1];
    sc.syscall = types[2];
    sc.proctitle = types[3];
    sc.event = types[4];
    for (p = s; p < end;) {
        event_match m;
        PyObject *item;
        const char *e;

        if (match_event(p, end, &m)) {
            item = event_item(&sc, &m);
            p = m.end;
        } else if (next_line(p, end, &e)) {
            item = str_of(p, e - p);
            p = e + 1;
        } else {
            break; /* a last line without "\n" */
        }
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(item);
    }
    scanner_clear(&sc);
    return out;
}

/* ---- one body: records.parse_access's common case ---- */

static scanner body_scanner; /* its last values are shared from call to call, as in a block */

static PyObject *parse_access(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyType_Check(args[1]) ||
        !PyType_IsSubtype((PyTypeObject *)args[1], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "parse_access(body, IpeAccess)");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(args[0]))
        Py_RETURN_NONE;
    span body = {(const char *)PyUnicode_DATA(args[0]), PyUnicode_GET_LENGTH(args[0])};
    body_scanner.access = (PyTypeObject *)args[1];
    return access_of(&body_scanner, body);
}

/* the count of "_digest=" in [p, e) (non-overlapping: the needle cannot overlap itself) */
static int count_digest_keys(const char *p, const char *e)
{
    int n = 0;
    while ((p = memmem(p, (size_t)(e - p), "_digest=", 8)) != NULL) {
        n++;
        p += 8;
    }
    return n;
}

/*
 * digest_parts(rule) -> (head, hex, rest) | None | NotImplemented: render._digest_parts for a
 * plain ASCII rule (NotImplemented for any other: the caller runs the Python one). Mirrors it
 * step by step: the first " fsverity_digest=", exactly one "_digest=" and no "_roothash=" in the
 * rule, the token's value up to the next space, its last colon, the hex after it all ASCII
 * letters and digits (at least one).
 */
static PyObject *digest_parts(PyObject *module, PyObject *rule)
{
    (void)module;
    if (!PyUnicode_Check(rule)) {
        PyErr_SetString(PyExc_TypeError, "digest_parts(rule: str)");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(rule))
        Py_RETURN_NOTIMPLEMENTED;
    const char *s = (const char *)PyUnicode_DATA(rule);
    Py_ssize_t n = PyUnicode_GET_LENGTH(rule);
    const char *e = s + n;
    const char *key = memmem(s, (size_t)n, " fsverity_digest=", 17);
    if (key == NULL || count_digest_keys(s, e) != 1 || memmem(s, (size_t)n, "_roothash=", 10) != NULL)
        Py_RETURN_NONE;
    const char *start = key + 17;
    const char *end = memchr(start, ' ', (size_t)(e - start));
    if (end == NULL)
        end = e;
    const char *colon = NULL;
    for (const char *q = end; q > start; q--) {
        if (q[-1] == ':') {
            colon = q - 1;
            break;
        }
    }
    if (colon == NULL || colon + 1 == end)
        Py_RETURN_NONE;
    for (const char *q = colon + 1; q < end; q++) {
        char c = *q; /* str.isalnum on ASCII (not the C locale's isalnum) */
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
            Py_RETURN_NONE;
    }
    Py_ssize_t h = colon + 1 - s, r = end - s;
    PyObject *head = PyUnicode_Substring(rule, 0, h);
    PyObject *hex = PyUnicode_Substring(rule, h, r);
    PyObject *rest = PyUnicode_Substring(rule, r, n);
    PyObject *out = head && hex && rest ? PyTuple_Pack(3, head, hex, rest) : NULL;
    Py_XDECREF(head);
    Py_XDECREF(hex);
    Py_XDECREF(rest);
    return out;
}

/* cache_stats() -> {field: (lookups, hits)} of the last-value caches since the module was loaded */
static PyObject *cache_stats(PyObject *module, PyObject *unused)
{
    static const char *const str_names[N_STR] = {"op", "hook", "access_comm", "path", "dev",
                                                 "rule", "arch", "syscall_comm", "exe", "proctitle"};
    static const char *const int_names[N_INT] = {"sec", "syscall", "exit", "ppid", "uid", "auid", "ses"};
    (void)module;
    (void)unused;
    PyObject *out = PyDict_New();
    for (int i = 0; out != NULL && i < N_STR + N_INT; i++) {
        int is_str = i < N_STR;
        PyObject *v = Py_BuildValue("(KK)", is_str ? str_lookups[i] : int_lookups[i - N_STR],
                                    is_str ? str_hits[i] : int_hits[i - N_STR]);
        if (v == NULL || PyDict_SetItemString(out, is_str ? str_names[i] : int_names[i - N_STR], v) < 0)
            Py_CLEAR(out);
        Py_XDECREF(v);
    }
    return out;
}

static PyMethodDef scan_methods[] = {
    {"cache_stats", cache_stats, METH_NOARGS,
     "cache_stats() -> {field: (lookups, hits)}: the scanners' last-value caches (one value per field)."},
    {"scan_block", (PyCFunction)(void (*)(void))scan_block, METH_FASTCALL,
     "scan_block(text, RawRecord, IpeAccess, Syscall, Proctitle, Event) -> list | None: the items of "
     "iped.audit.bulk.scan_block_py(text), or None for text it leaves to Python."},
    {"digest_parts", digest_parts, METH_O,
     "digest_parts(rule) -> (head, hex, rest) | None | NotImplemented: iped.audit.render._digest_parts for a "
     "plain ASCII rule, NotImplemented for any other."},
    {"parse_access", (PyCFunction)(void (*)(void))parse_access, METH_FASTCALL,
     "parse_access(body, IpeAccess) -> IpeAccess | None: iped.audit.records.parse_access for a plain ASCII body "
     "in the kernel's common form (quoted strings, decimal pid and ino), None for any other."},
    {"recv_records", (PyCFunction)(void (*)(void))recv_records, METH_FASTCALL,
     "recv_records(fd, RawRecord, parse_stamped, RecordError, kernel_only, max_datagrams, runs) -> (records, "
     "enobufs, foreign_sender, malformed, control, frames): iped.audit.netlink.NetlinkSource.read's loop "
     "(recvmmsg); runs: records in lists, consecutive ones of one stamp up to its EOE together."},
    {"group_runs", (PyCFunction)(void (*)(void))group_runs, METH_FASTCALL,
     "group_runs(runs, start, inflight, done, last_serial, track_gaps, now, Event, IpeAccess, keys, ipe_events, "
     "accesses, uncounted) -> (stop, last_serial, records, events): iped.audit.group.Grouper.feed_ipe_runs's "
     "common case, whole new events one after another."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef scan_module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "iped.audit._scan",
    .m_doc = "The auditd log block scanner of iped.audit.bulk and the netlink reader of iped.audit.netlink, in C.",
    .m_size = -1,
    .m_methods = scan_methods,
};

PyMODINIT_FUNC PyInit__scan(void)
{
    if (type_1420 == NULL) {
        type_1420 = PyLong_FromLong(1420);
        type_1300 = PyLong_FromLong(1300);
        type_1327 = PyLong_FromLong(1327);
        key_sec = PyUnicode_InternFromString("sec");
        key_msec = PyUnicode_InternFromString("msec");
        key_serial = PyUnicode_InternFromString("serial");
        key_records = PyUnicode_InternFromString("records");
        key_complete = PyUnicode_InternFromString("complete");
        key_typed = PyUnicode_InternFromString("typed");
        key_is_ipe = PyUnicode_InternFromString("is_ipe");
        key_dict = PyUnicode_InternFromString("__dict__");
        no_args = PyTuple_New(0);
        if (type_1420 == NULL || type_1300 == NULL || type_1327 == NULL || key_sec == NULL || key_msec == NULL ||
            key_serial == NULL || key_records == NULL || key_complete == NULL || key_typed == NULL ||
            key_is_ipe == NULL || key_dict == NULL || no_args == NULL)
            return NULL;
    }
    return PyModule_Create(&scan_module);
}

