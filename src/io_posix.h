/*
 * io_posix.h - the POSIX data path: a range of a chunk file to or from
 * memory with pread/pwrite and their vectored forms, through the kvs__io()
 * table (so the fault tests reach every call), continuing after short
 * transfers.  The host transfer (xfer_host.c) moves every byte this way;
 * the device path's bounce ring uses kvs__pread_full/kvs__pwrite_full
 * (io_ops.h) for its staging.
 */
#ifndef KVS_IO_POSIX_H
#define KVS_IO_POSIX_H

#include <stdbool.h>
#include <sys/types.h>
#include <sys/uio.h>

/* preadv (write false) or pwritev (write true) of the whole of iov[0..n)
 * at file offset off, continuing after short transfers and retrying
 * EINTR/EAGAIN a bounded number of times.  iov is consumed (its entries
 * are advanced).  0, or -1 with errno (ENODATA: the file ended early on a
 * read; EIO: a write made no progress). */
int kvs__posix_rw_full(int fd, struct iovec *iov, int n, off_t off, bool write);

#endif
