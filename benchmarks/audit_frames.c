/*
 * audit_frames -- the C side of bench_follower.py: a paced source of IPE audit records in the
 * kernel's netlink framing, and the baseline reader.
 *
 *   audit_frames send FD EVENTS RATE [distinct]
 *       Write EVENTS IPE access events -- 1420, SYSCALL, PROCTITLE, EOE, the shape the kernel
 *       gives an audited execve with success_audit=1 -- to the datagram socket FD, one record per
 *       datagram as the kernel multicasts them (struct nlmsghdr, then "audit(S.MS:N): body"),
 *       each event with the next serial. RATE > 0: paced at RATE events/s, non-blocking; a record
 *       the socket has no room for is dropped and counted, as the kernel drops a multicast record
 *       when the reader's receive buffer is full. RATE 0: as fast as the reader takes them
 *       (blocking, nothing dropped). The last event is always sent whole, so the serials dropped
 *       before it show as gaps; then an NLMSG_NOOP frame (blocking) ends the stream. Prints
 *       "sent EVENTS dropped RECORDS seconds WALL". "distinct": every event names another rule (a
 *       fsverity_digest= rule per file), path, comm and exe (bench_follower.py --soak).
 *
 *   audit_frames read FD [NAP_MS]
 *       The baseline, what auditd's own reader does before it formats anything: receive each
 *       datagram, walk its nlmsghdr frames, count the records and the EOEs, until the NLMSG_NOOP.
 *       NAP_MS > 0: after each wake-up, sleep that long, then read at most 1024 datagrams (the
 *       follower's batched run). Prints "records N events M cpu SECONDS" (CPU time from the
 *       first datagram on).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/netlink.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static double now(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *const bodies[4] = {
    "ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=%lu comm=\"bash\" path=\"/usr/bin/ls\" dev=\"vda1\" "
    "ino=%lu rule=\"op=EXECUTE boot_verified=TRUE action=ALLOW\"",
    "arch=c000003e syscall=59 success=yes exit=0 a0=55e a1=55f a2=560 a3=8 items=2 ppid=1 pid=%lu auid=1000 "
    "uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 "
    "comm=\"ls\" exe=\"/usr/bin/ls\" subj=unconfined key=(null)",
    "proctitle=6C73002D6C",
    "",
};
/* "distinct": every event another rule (a fsverity_digest= rule per file), path, comm and exe */
static const char *const distinct_bodies[4] = {
    "ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=%1$lu comm=\"c%1$lu\" path=\"/usr/bin/t%1$lu\" dev=\"vda1\" "
    "ino=%1$lu rule=\"op=EXECUTE fsverity_digest=\"sha256\":%1$064lx action=ALLOW\"",
    "arch=c000003e syscall=59 success=yes exit=0 a0=55e a1=55f a2=560 a3=8 items=2 ppid=1 pid=%1$lu auid=1000 "
    "uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 "
    "comm=\"c%1$lu\" exe=\"/usr/bin/t%1$lu\" subj=unconfined key=(null)",
    "proctitle=6C73002D6C",
    "",
};
static const unsigned short types[4] = {1420, 1300, 1327, 1320};

static int send_frames(int fd, unsigned long events, double rate, int distinct)
{
    char buf[1024];
    unsigned long dropped = 0, serial = 1000;
    double t0 = now(CLOCK_MONOTONIC);

    for (unsigned long i = 0; i < events; i++) {
        /* the last event is sent whole (blocking): the serials dropped before it show as gaps */
        int flags = rate > 0 && i + 1 < events ? MSG_DONTWAIT : 0;
        if (rate > 0 && i % 32 == 0) {
            double due = t0 + (double)i / rate, wait = due - now(CLOCK_MONOTONIC);
            if (wait > 0) {
                struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
        serial++;
        for (int r = 0; r < 4; r++) {
            struct nlmsghdr *h = (struct nlmsghdr *)buf;
            char *p = buf + NLMSG_HDRLEN;
            int n = snprintf(p, sizeof(buf) - NLMSG_HDRLEN, "audit(%lu.%03lu:%lu): ", 1700000000 + i / 1000, i % 1000,
                             serial);
            if (distinct)
                n += snprintf(p + n, sizeof(buf) - NLMSG_HDRLEN - (size_t)n, distinct_bodies[r], i);
            else
                n += snprintf(p + n, sizeof(buf) - NLMSG_HDRLEN - (size_t)n, bodies[r], i, i);
            memset(h, 0, sizeof(*h));
            h->nlmsg_len = NLMSG_HDRLEN + (unsigned)n;
            h->nlmsg_type = types[r];
            if (send(fd, buf, h->nlmsg_len, flags) < 0) {
                if (errno != EAGAIN) {
                    perror("send");
                    return 1;
                }
                dropped++;
            }
        }
    }
    struct nlmsghdr end = {.nlmsg_len = NLMSG_HDRLEN, .nlmsg_type = NLMSG_NOOP};
    if (send(fd, &end, sizeof(end), 0) < 0) {
        perror("send");
        return 1;
    }
    printf("sent %lu dropped %lu seconds %.6f\n", events, dropped, now(CLOCK_MONOTONIC) - t0);
    return 0;
}

/* the frames of one datagram counted; 1 at the NLMSG_NOOP that ends the stream */
static int count_frames(const char *buf, int len, unsigned long *records, unsigned long *events)
{
    for (const struct nlmsghdr *h = (const struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_type == NLMSG_NOOP)
            return 1;
        (*records)++;
        *events += h->nlmsg_type == 1320;
    }
    return 0;
}

static int read_frames(int fd, double nap_ms)
{
    static char buf[65536];
    unsigned long records = 0, events = 0;
    double t0 = -1;
    struct timespec nap = {0, (long)(nap_ms * 1e6)};
    struct pollfd pfd = {fd, POLLIN, 0};
    int batch = 0; /* datagrams left in this wake-up's batch (nap_ms > 0) */

    for (;;) {
        if (nap_ms > 0 && batch == 0) {
            /* as the follower's batched run: wait until readable, sleep, then read at most
             * 1024 datagrams (NetlinkSource.read's max) before waiting again */
            if (poll(&pfd, 1, -1) < 0 && errno != EINTR) {
                perror("poll");
                return 1;
            }
            nanosleep(&nap, NULL);
            batch = 1024;
        }
        ssize_t n = recv(fd, buf, sizeof(buf), nap_ms > 0 ? MSG_DONTWAIT : 0);
        if (n < 0) {
            if (errno == EAGAIN) { /* drained: wait again */
                batch = 0;
                continue;
            }
            if (errno == EINTR || errno == ENOBUFS)
                continue;
            perror("recv");
            return 1;
        }
        if (batch > 0)
            batch--;
        if (t0 < 0)
            t0 = now(CLOCK_PROCESS_CPUTIME_ID);
        if (count_frames(buf, (int)n, &records, &events)) {
            printf("records %lu events %lu cpu %.6f\n", records, events, now(CLOCK_PROCESS_CPUTIME_ID) - t0);
            return 0;
        }
    }
}

int main(int argc, char **argv)
{
    if ((argc == 5 || argc == 6) && strcmp(argv[1], "send") == 0)
        return send_frames(atoi(argv[2]), strtoul(argv[3], NULL, 10), atof(argv[4]),
                           argc == 6 && strcmp(argv[5], "distinct") == 0);
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "read") == 0)
        return read_frames(atoi(argv[2]), argc == 4 ? atof(argv[3]) : 0);
    fprintf(stderr, "usage: audit_frames send FD EVENTS RATE [distinct] | audit_frames read FD [NAP_MS]\n");
    return 2;
}
