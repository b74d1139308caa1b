/*
 * The system calls the engine makes on its sockets, on userfaultfd and on
 * /proc/self/pagemap, routed through one table of function pointers
 * (SQLite's aSyscall[]), so that a test can replace an entry and produce on
 * demand what the kernel produces only now and then: short writes, EAGAIN,
 * ECONNRESET in the middle of a stream, EEXIST from UFFDIO_COPY.
 *
 * Each wrapper keeps the calling convention of the call it stands for: it
 * returns what the system call returns, and on failure -1 with errno set.
 * A call site changes by name only (ioctl( becomes lm_sys_ioctl( ) and
 * turns errno into -errno exactly as before.
 *
 * The table is process-wide: the one deliberate global in the library,
 * kept because a test hook has to reach calls made deep inside threads the
 * library starts, where no context is passed. It is a testing aid, not an
 * interface: an embedder never sets it, and nothing but a test should. The
 * wrappers are always compiled in (one indirect call next to a system
 * call), so the code the tests exercise is the code that ships.
 */
#ifndef LM_UTIL_SYS_H
#define LM_UTIL_SYS_H

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

/*
 * The hooks. The library calls them from any of its threads, concurrently
 * (the migration thread, multifd sender and receiver threads, the postcopy
 * fault and request threads), so a replacement must be thread-safe. None
 * allocates or frees anything the caller sees. A replacement that only
 * wants to observe or alter one call does the real work through
 * lm__sys_real, then reports what it likes within the contract below.
 */
typedef struct lm_sys_ops {
    /* Every write to a connection (lm_conn_writev: each frame and packet,
     * on the main connection, the multifd channels and the postcopy preempt
     * connection, in both directions). fd is non-blocking; flags are
     * MSG_NOSIGNAL. May write fewer bytes than msg describes (a short
     * write): the caller continues from where it stopped. -1/EAGAIN: the
     * caller waits for POLLOUT (bounded by its I/O timeout) and calls
     * again; -1/EINTR: called again at once; any other errno ends the
     * migration, named in the caller's message (ECONNRESET, EPIPE and
     * ENOTCONN as a lost connection). msg is not modified. */
    ssize_t (*sendmsg)(int fd, const struct msghdr *msg, int flags);
    /* Every read from a connection (lm_conn_readv). Returns the bytes read,
     * 0 when the peer closed the stream, or -1 with errno as for sendmsg
     * (EAGAIN: wait for POLLIN and call again). */
    ssize_t (*readv)(int fd, const struct iovec *iov, int iovcnt);
    /* Only ever with MSG_PEEK: looks, without consuming, whether data or an
     * end of stream waits (lm_conn_read_or_eof, and the destination
     * watching its main connection while channels connect). 0: the peer
     * closed; fewer bytes than len: no more has arrived yet. */
    ssize_t (*recv)(int fd, void *buf, size_t len, int flags);
    /* Connecting a fresh non-blocking socket, source side only: the main
     * connection first, then each multifd channel in channel order, then
     * the postcopy preempt connection, all from the migration thread.
     * 0, or -1/EINPROGRESS (the caller polls for POLLOUT and reads
     * SO_ERROR), or -1 with the error. */
    int (*connect)(int fd, const struct sockaddr *addr, socklen_t len);
    /* Accepting on the destination's listener (lm_listener_accept), with
     * flags SOCK_CLOEXEC | SOCK_NONBLOCK. Returns the new descriptor, or -1:
     * EAGAIN, EINTR and ECONNABORTED make the caller wait and try again,
     * anything else fails lm_incoming(). */
    int (*accept4)(int fd, struct sockaddr *addr, socklen_t *len, int flags);
    /* Every ioctl: on a userfaultfd (UFFDIO_API, _REGISTER, _UNREGISTER,
     * _WRITEPROTECT, _COPY, _ZEROPAGE, _MOVE, _WAKE), PAGEMAP_SCAN on
     * /proc/self/pagemap, and the kvm-log tracker's KVM_CHECK_EXTENSION,
     * KVM_ENABLE_CAP, KVM_SET_USER_MEMORY_REGION, KVM_GET_DIRTY_LOG and
     * KVM_CLEAR_DIRTY_LOG (kvm-ring: KVM_RESET_DIRTY_RINGS, arg NULL) on
     * /dev/kvm and the embedder's VM descriptor. arg points at the request's structure, which the
     * kernel may update (uffdio_api.features, uffdio_copy.copy,
     * pm_scan_arg.walk_end), and a replacement must leave it as the real
     * call would for what it reports. Returns 0 (PAGEMAP_SCAN: the number of
     * regions filled) or -1 with errno. Of note for placement in postcopy:
     * -1/EEXIST from UFFDIO_COPY, _ZEROPAGE or _MOVE means the page is
     * there already; the caller wakes its waiters and counts it
     * (lm_stats.postcopy_eexist), it is not an error. */
    int (*ioctl)(int fd, unsigned long request, void *arg);
} lm_sys_ops;

/* The real system calls (what the table holds unless a test changed it). */
extern const lm_sys_ops lm__sys_real;

/*
 * Testing aid: from now on every wrapper calls ops. Every entry must be set
 * (start from a copy of lm__sys_real and replace what the test needs);
 * -EINVAL otherwise, and nothing changes. The switch is atomic, but a call
 * already running goes on in the table it started in, so ops must stay
 * valid until every migration that ran with it has returned (a static
 * table is simplest). Set it before starting a migration and reset it
 * after, rather than while one runs.
 */
int lm__sys_set(const lm_sys_ops *ops);
/* Back to lm__sys_real. */
void lm__sys_reset(void);

ssize_t lm_sys_sendmsg(int fd, const struct msghdr *msg, int flags);
ssize_t lm_sys_readv(int fd, const struct iovec *iov, int iovcnt);
ssize_t lm_sys_recv(int fd, void *buf, size_t len, int flags);
int lm_sys_connect(int fd, const struct sockaddr *addr, socklen_t len);
int lm_sys_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
int lm_sys_ioctl(int fd, unsigned long request, void *arg);

#endif
