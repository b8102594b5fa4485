/*
 * iped.audit._scan's netlink half: the record reader of iped.audit.netlink
 * (recv_records: NetlinkSource.read's loop over recvmmsg, records parsed as
 * records.parse_stamped would) and the follower's grouping (group_runs: Grouper.feed_ipe_runs's
 * common case). The records and events it builds are those of _scan.c (build, complete_event,
 * access_of: _scan.h), so both halves give Python the same objects.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE /* recvmmsg */
#include "_scan.h"
#include <errno.h>
#include <limits.h>
#include <linux/netlink.h>
#include <sys/socket.h>

/* ---- netlink: iped.audit.netlink.NetlinkSource.read ---- */

#define NL_BATCH 16       /* datagrams per recvmmsg */
#define NL_BUF (1 << 16)  /* bytes per datagram, as NetlinkSource's recvfrom(65536) */
#define NLMSG_HDR_LEN 16  /* struct nlmsghdr: len, type, flags, seq, pid */

static char *nl_bufs; /* NL_BATCH buffers of NL_BUF, allocated on first use */

/* netlink.py's counters, in NetlinkStats' names */
typedef struct {
    long long enobufs, foreign_sender, malformed, control, frames;
} nl_stats;

/* [0-9]{1,max} at *p (up to e) ended by `sep`: its value; *p moves past the separator.
 * max (<= 18, so the value fits) is records.STAMP_DIGITS' bound for the part: a longer part is
 * left to Python, which refuses it the same way everywhere */
static int stamp_part(const char **p, const char *e, char sep, int max, long long *out)
{
    const char *d = *p;
    long long v = 0;
    while (*p < e && (unsigned)(**p - '0') <= 9 && *p - d < max)
        v = v * 10 + (*(*p)++ - '0');
    if (*p == d || *p >= e || **p != sep)
        return 0;
    (*p)++;
    *out = v;
    return 1;
}

/* The int objects of the last stamp read and of the record types seen: an event's records
 * share one stamp, and a few types make up the stream, so most records need no new int. */
typedef struct {
    long long v[3];
    PyObject *o[3]; /* NULL until a stamp is read */
} nl_stamp;

static PyObject *record_types[2000]; /* 1000..2999, made on first use (kept for good) */

static PyObject *type_int(long rtype)
{
    if (rtype < 1000 || rtype >= 3000)
        return PyLong_FromLong(rtype);
    PyObject **slot = &record_types[rtype - 1000];
    if (*slot == NULL)
        *slot = PyLong_FromLong(rtype);
    return Py_XNewRef(*slot);
}

static PyObject *stamp_item(nl_stamp *last, int i, long long v)
{
    if (last->o[i] == NULL || last->v[i] != v) {
        PyObject *o = PyLong_FromLongLong(v);
        if (o == NULL)
            return NULL;
        Py_XSETREF(last->o[i], o);
        last->v[i] = v;
    }
    return Py_NewRef(last->o[i]);
}

static void stamp_clear(nl_stamp *last)
{
    for (int i = 0; i < 3; i++)
        Py_CLEAR(last->o[i]);
}

/* records.parse_stamped(rtype, payload decoded) for "audit(S.MS:N):[ ]body" with plain decimal
 * numbers: the RawRecord; NULL with no error set for any other form (the caller asks Python) */
static PyObject *stamped_record(PyTypeObject *raw, long rtype, const char *p, Py_ssize_t n, long long v[3],
                                nl_stamp *last)
{
    const char *e = p + n, *body;
    Py_ssize_t bn;
    PyObject *items[5];

    if (n < 6 || memcmp(p, "audit(", 6) != 0)
        return NULL;
    p += 6;
    if (!stamp_part(&p, e, '.', 11, &v[0]) || !stamp_part(&p, e, ':', 3, &v[1]) || !stamp_part(&p, e, ')', 18, &v[2]))
        return NULL;
    if (e - p >= 2 && p[0] == ':' && p[1] == ' ')
        p += 2;
    else if (e - p >= 1 && p[0] == ':')
        p += 1;
    body = p;
    bn = e - p;
    /* auditd's enriched part after \x1d; netlink's NUL padding and a trailing newline */
    const char *gs = memchr(body, '\x1d', (size_t)bn);
    if (gs != NULL)
        bn = gs - body;
    if (bn > 0 && (body[bn - 1] == '\n' || body[bn - 1] == '\0'))
        while (bn > 0 && (body[bn - 1] == '\n' || body[bn - 1] == '\0'))
            bn--;
    int ascii = 1;
    for (Py_ssize_t i = 0; i < bn && ascii; i++)
        ascii = (unsigned char)body[i] < 0x80;
    items[0] = type_int(rtype);
    items[1] = stamp_item(last, 0, v[0]);
    items[2] = stamp_item(last, 1, v[1]);
    items[3] = stamp_item(last, 2, v[2]);
    items[4] = ascii ? str_of(body, bn) : PyUnicode_DecodeUTF8(body, bn, "backslashreplace");
    PyObject *rec = build(raw, 5, items);
    if (rec == NULL && !PyErr_Occurred())
        PyErr_NoMemory();
    return rec;
}

/* runs (NetlinkSource.read_runs): consecutive records of one stamp, up to its EOE, in one list */
typedef struct {
    int on;            /* make runs at all */
    PyObject *run;     /* the open run (borrowed: it is in the output list), NULL if none */
    long long stamp[3];
    nl_stamp ints;     /* the last stamp's int objects */
} nl_runs;

/* rec (stamp: its stamp, NULL when Python parsed it) into out, as a record or into a run */
static int nl_put(PyObject *out, PyObject *rec, long rtype, const long long *stamp, nl_runs *runs)
{
    if (!runs->on)
        return PyList_Append(out, rec);
    if (runs->run != NULL && stamp != NULL && memcmp(stamp, runs->stamp, sizeof(runs->stamp)) == 0) {
        /* the same record twice goes to the grouper one by one: start a new run */
        int dup = 0;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(runs->run) && !dup; i++) {
            PyObject *item = PyList_GET_ITEM(runs->run, i);
            if (PyLong_AsLong(PyTuple_GET_ITEM(item, 0)) != rtype) /* (an int: a C-read record) */
                continue;
            dup = PyObject_RichCompareBool(item, rec, Py_EQ);
            if (dup < 0)
                return -1;
        }
        if (!dup) {
            if (PyList_Append(runs->run, rec) < 0)
                return -1;
            if (rtype == 1320)
                runs->run = NULL; /* EOE: the event is whole */
            return 0;
        }
    }
    PyObject *run = PyList_New(1);
    if (run == NULL)
        return -1;
    PyList_SET_ITEM(run, 0, Py_NewRef(rec));
    int rc = PyList_Append(out, run);
    Py_DECREF(run);
    runs->run = rc == 0 && stamp != NULL && rtype != 1320 ? run : NULL;
    if (stamp != NULL)
        memcpy(runs->stamp, stamp, sizeof(runs->stamp));
    return rc;
}

/* one datagram's frames (netlink.py: NetlinkSource._frames): records appended to out */
static int nl_frames(const char *data, Py_ssize_t size, PyTypeObject *raw, PyObject *parse, PyObject *record_error,
                     PyObject *out, nl_stats *st, nl_runs *runs)
{
    Py_ssize_t offset = 0;

    while (offset + NLMSG_HDR_LEN <= size) {
        unsigned int length;
        unsigned short rtype;
        memcpy(&length, data + offset, 4);
        memcpy(&rtype, data + offset + 4, 2);
        if (length < NLMSG_HDR_LEN || offset + (Py_ssize_t)length > size) {
            st->malformed++;
            break;
        }
        st->frames++;
        if (rtype < 1000) {
            st->control++;
        } else {
            const char *payload = data + offset + NLMSG_HDR_LEN;
            Py_ssize_t n = (Py_ssize_t)length - NLMSG_HDR_LEN;
            long long stamp[3];
            int plain = 1;
            PyObject *rec = stamped_record(raw, rtype, payload, n, stamp, &runs->ints);
            if (rec == NULL) {
                plain = 0;
                if (PyErr_Occurred())
                    return -1;
                /* any other form: records.parse_stamped decides, RecordError counts as malformed */
                PyObject *text = PyUnicode_DecodeUTF8(payload, n, "backslashreplace");
                if (text == NULL)
                    return -1;
                rec = PyObject_CallFunction(parse, "iO", (int)rtype, text);
                Py_DECREF(text);
                if (rec == NULL) {
                    if (!PyErr_ExceptionMatches(record_error))
                        return -1;
                    PyErr_Clear();
                    st->malformed++;
                }
            }
            if (rec != NULL) {
                int rc = nl_put(out, rec, rtype, plain ? stamp : NULL, runs);
                Py_DECREF(rec);
                if (rc < 0)
                    return -1;
            }
        }
        offset += (length + 3) & ~3U;
    }
    return 0;
}

PyObject *recv_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int fd, kernel_only;
    Py_ssize_t max_datagrams, done = 0;
    nl_runs runs = {0};
    struct mmsghdr msgs[NL_BATCH];
    struct iovec iov[NL_BATCH];
    struct sockaddr_nl addrs[NL_BATCH];
    nl_stats st = {0};
    PyObject *out;

    (void)module;
    if (nargs != 7 || !PyType_Check(args[1]) || !PyType_IsSubtype((PyTypeObject *)args[1], &PyTuple_Type) ||
        !PyCallable_Check(args[2]) || !PyType_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "recv_records(fd, RawRecord, parse_stamped, RecordError, kernel_only, max_datagrams, runs)");
        return NULL;
    }
    long fd_l = PyLong_AsLong(args[0]);
    fd = (int)fd_l;
    if (fd_l < 0 || fd_l > INT_MAX) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "recv_records: bad file descriptor");
        return NULL;
    }
    kernel_only = PyObject_IsTrue(args[4]);
    max_datagrams = PyLong_AsSsize_t(args[5]);
    runs.on = PyObject_IsTrue(args[6]);
    if (PyErr_Occurred() || kernel_only < 0 || runs.on < 0)
        return NULL;
    if (nl_bufs == NULL && (nl_bufs = PyMem_RawMalloc((size_t)NL_BATCH * NL_BUF)) == NULL)
        return PyErr_NoMemory();
    out = PyList_New(0);
    if (out == NULL)
        return NULL;
    while (done < max_datagrams) {
        unsigned int want = (unsigned int)(max_datagrams - done < NL_BATCH ? max_datagrams - done : NL_BATCH);
        for (unsigned int i = 0; i < want; i++) {
            iov[i].iov_base = nl_bufs + (size_t)i * NL_BUF;
            iov[i].iov_len = NL_BUF;
            memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &addrs[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(addrs[i]);
        }
        int got;
        Py_BEGIN_ALLOW_THREADS
        got = recvmmsg(fd, msgs, want, MSG_DONTWAIT, NULL);
        Py_END_ALLOW_THREADS
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR) {
                if (PyErr_CheckSignals() < 0)
                    goto fail;
                continue;
            }
            if (errno == ENOBUFS) { /* the kernel dropped records; the socket works on */
                st.enobufs++;
                done++;
                continue;
            }
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail;
        }
        for (int i = 0; i < got; i++) {
            const struct sockaddr_nl *from = &addrs[i];
            /* only the kernel (port id 0) writes to the audit group; anything else is forged */
            if (kernel_only && msgs[i].msg_hdr.msg_namelen >= sizeof(*from) && from->nl_pid != 0) {
                st.foreign_sender++;
                continue;
            }
            if (nl_frames(nl_bufs + (size_t)i * NL_BUF, (Py_ssize_t)msgs[i].msg_len, (PyTypeObject *)args[1], args[2],
                          args[3], out, &st, &runs) < 0)
                goto fail;
        }
        done += got;
        if ((unsigned int)got < want)
            break; /* drained */
    }
    stamp_clear(&runs.ints);
    return Py_BuildValue("(NLLLLL)", out, st.enobufs, st.foreign_sender, st.malformed, st.control, st.frames);
fail:
    stamp_clear(&runs.ints);
    Py_DECREF(out);
    return NULL;
}

/* ---- the follower's grouping: iped.audit.group.Grouper.feed_ipe_runs's common case ---- */

static scanner follow_scanner; /* access_of's last values, shared from call to call */

/* a record's type or serial (a RawRecord item) as a C number; -1 for anything else */
static long long record_num(PyObject *rec, Py_ssize_t item)
{
    PyObject *o = PyTuple_GET_ITEM(rec, item);
    if (!PyLong_CheckExact(o))
        return -1;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    return overflow || v < 0 ? -1 : v;
}

/* group._single_record */
static int single_record(long long rtype)
{
    return (rtype >= 1100 && rtype <= 1199) || (rtype >= 2100 && rtype <= 2999) || rtype == 1005;
}

/* The run's place in the follower: -1 the grouper's Python path must take it (a 1404, which is
 * IPE's only with lsm=ipe; several IPE records; an IPE record other than a leading 1420), 0 no
 * IPE record (grouped, never returned), 1 its one IPE record is the 1420 it starts with. */
static int run_kind(PyObject *run, Py_ssize_t n)
{
    int ipe = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        long long t = record_num(PyList_GET_ITEM(run, j), 0);
        if (t == 1404)
            return -1;
        if (t >= 1420 && t <= 1422 && (j > 0 || t != 1420 || ++ipe > 1))
            return -1;
    }
    return ipe;
}

/*
 * group_runs(runs, start, inflight, done, last_serial, track_gaps, now, Event, IpeAccess,
 *            keys, ipe_events, accesses, uncounted) -> (stop, last_serial, records, events)
 *
 * Grouper.feed_run's fast case over runs[start:], one run after another, until one it does not
 * take: a run of RawRecords ending with its EOE whose stamp is new (in neither inflight nor
 * done), whose first record is not a single-record type and whose serial continues the last
 * one (with track_gaps), and whose IPE records the follower can count here (run_kind >= 0).
 * For each: done[stamp] = now, the stamp appended to keys, and when it holds an IPE record the
 * complete Event (its is_ipe set) appended to ipe_events, with its IpeAccess (access_of) to
 * accesses, or, for a 1420 body access_of leaves to Python, the event to uncounted. stop is the
 * index of the run not taken (len(runs) when all were).
 */
PyObject *group_runs(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 13 || !PyList_Check(args[0]) || !PyDict_Check(args[2]) || !PyDict_Check(args[3]) ||
        !PyType_Check(args[7]) || !PyType_Check(args[8]) ||
        !PyType_IsSubtype((PyTypeObject *)args[8], &PyTuple_Type) || !PyList_Check(args[9]) ||
        !PyList_Check(args[10]) || !PyList_Check(args[11]) || !PyList_Check(args[12])) {
        PyErr_SetString(PyExc_TypeError, "group_runs(runs, start, inflight, done, last_serial, track_gaps, now, "
                                         "Event, IpeAccess, keys, ipe_events, accesses, uncounted)");
        return NULL;
    }
    PyObject *runs = args[0], *inflight = args[2], *done = args[3], *now = args[6];
    PyObject *keys = args[9], *ipe_events = args[10], *accesses = args[11], *uncounted = args[12];
    PyTypeObject *event_type = (PyTypeObject *)args[7];
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    int track = PyObject_IsTrue(args[5]);
    long long last = args[4] == Py_None ? -1 : PyLong_AsLongLong(args[4]);
    long long records = 0, events = 0;
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return NULL;
        PyErr_Clear(); /* a serial past 2**63: Python's path tracks it */
        last = -1;
    }
    if (i < 0 || track < 0)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "group_runs: bad start");
    follow_scanner.access = (PyTypeObject *)args[8];
    for (; i < PyList_GET_SIZE(runs); i++) {
        PyObject *run = PyList_GET_ITEM(runs, i);
        if (!PyList_Check(run) || PyList_GET_SIZE(run) < 2)
            break;
        Py_ssize_t n = PyList_GET_SIZE(run) - 1; /* the records before the EOE */
        PyObject *first = PyList_GET_ITEM(run, 0);
        int bad = 0;
        for (Py_ssize_t j = 0; j <= n && !bad; j++) {
            PyObject *rec = PyList_GET_ITEM(run, j);
            bad = !PyTuple_Check(rec) || PyTuple_GET_SIZE(rec) != 5;
        }
        if (bad || record_num(PyList_GET_ITEM(run, n), 0) != 1320)
            break;
        long long rtype = record_num(first, 0), serial = record_num(first, 3);
        if (rtype < 0 || rtype == 1320 || single_record(rtype) || serial < 0)
            break;
        if (track && (last < 0 || (serial != last && serial != last + 1)))
            break;
        int kind = run_kind(run, n);
        if (kind < 0)
            break;
        PyObject *stamp[3] = {PyTuple_GET_ITEM(first, 1), PyTuple_GET_ITEM(first, 2), PyTuple_GET_ITEM(first, 3)};
        PyObject *key = PyTuple_Pack(3, stamp[0], stamp[1], stamp[2]);
        if (key == NULL)
            return NULL;
        PyObject_GC_UnTrack(key); /* (ints: see build()) */
        /* new in inflight (mostly empty) and done: done[key] = now where it was not there
         * (setdefault: the stamp's hash once) */
        int seen = PyDict_GET_SIZE(inflight) ? PyDict_Contains(inflight, key) : 0;
        Py_ssize_t size = PyDict_GET_SIZE(done);
        if (seen == 0 && PyDict_SetDefault(done, key, now) == NULL)
            seen = -1;
        else if (seen == 0 && PyDict_GET_SIZE(done) == size)
            seen = 1;
        if (seen != 0 || PyList_Append(keys, key) < 0) {
            Py_DECREF(key);
            if (seen == 1)
                break;
            return NULL;
        }
        Py_DECREF(key);
        if (track)
            last = serial;
        records += n + 1;
        events++;
        if (kind == 0)
            continue;
        PyObject *tuple = PyTuple_New(n);
        if (tuple == NULL)
            return NULL;
        for (Py_ssize_t j = 0; j < n; j++)
            PyTuple_SET_ITEM(tuple, j, Py_NewRef(PyList_GET_ITEM(run, j)));
        /* the records and the event built of them hold no cycle (see build()): collecting
         * them is left to their reference counts, which keeps a burst of events from making
         * the collector walk every one of them */
        PyObject_GC_UnTrack(tuple);
        PyObject *ev = complete_event(event_type, stamp, tuple, NULL);
        Py_DECREF(tuple);
        if (ev != NULL)
            PyObject_GC_UnTrack(ev);
        if (ev == NULL || PyList_Append(ipe_events, ev) < 0) {
            Py_XDECREF(ev);
            return NULL;
        }
        PyObject *body = PyTuple_GET_ITEM(first, 4), *access = Py_None;
        Py_INCREF(access);
        if (PyUnicode_Check(body) && PyUnicode_IS_ASCII(body)) {
            span b = {(const char *)PyUnicode_DATA(body), PyUnicode_GET_LENGTH(body)};
            Py_SETREF(access, access_of(&follow_scanner, b));
        }
        int rc = access == NULL                ? -1
                 : access == Py_None           ? PyList_Append(uncounted, ev)
                                               : PyList_Append(accesses, access);
        Py_XDECREF(access);
        Py_DECREF(ev);
        if (rc < 0)
            return NULL;
    }
    if (last < 0)
        return Py_BuildValue("(nOLL)", i, args[4], records, events);
    return Py_BuildValue("(nLLL)", i, last, records, events);
}
