/*
 * io_posix.c - the POSIX data path's vectored transfers (io_posix.h).
 *
 * Its own room so that the host transfer reads as "which bytes go where"
 * and the system-call details (short counts, EINTR, the end of a file
 * that was truncated under us) are written once.
 */
#include "io_posix.h"

#include "io_ops.h"

#include <errno.h>

int kvs__posix_rw_full(int fd, struct iovec *iov, int n, off_t off, bool write)
{
    const kvs_io_ops *io = kvs__io();
    int retries = 0;
    while (n > 0) {
        ssize_t r = write ? io->pwritev(fd, iov, n, off) : io->preadv(fd, iov, n, off);
        if (r < 0) {
            if ((errno == EINTR || errno == EAGAIN) && ++retries < 16)
                continue;
            return -1;
        }
        if (r == 0) {
            errno = write ? EIO : ENODATA;
            return -1;
        }
        off += r;
        while (n > 0 && (size_t)r >= iov->iov_len) {
            r -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + r;
            iov->iov_len -= (size_t)r;
        }
    }
    return 0;
}
