/*
 * io_cufile.h - cuFile (GPUDirect Storage), loaded at run time.
 *
 * libcufile is opened with dlopen and its driver opened once per process, so
 * the library builds and runs where cuFile is absent.  Every call returns a
 * cuFile status (0: success; 5000 + n: a CUfileOpError; below 5000: an
 * errno of the data path), which kvs__cufile_strerror() turns into
 * "5027 (CU_FILE_HANDLE_NOT_REGISTERED: file descriptor is not registered)".
 */
#ifndef KVS_IO_CUFILE_H
#define KVS_IO_CUFILE_H

#include "internal.h"

#include <sys/types.h>

/* Loads libcufile and opens its driver (once per process; later calls
 * return the first outcome).  0 on success; otherwise why[] says what
 * failed, with its code. */
int kvs__cufile_init(char *why, size_t why_len);
/* Where libcufile was loaded from ("" before a successful init). */
const char *kvs__cufile_library(void);

/* "<code> (<NAME>: <text>)" for a cuFile status, "errno N (text)" for an
 * errno (either sign).  Static storage (per thread). */
const char *kvs__cufile_strerror(int status);

int kvs__cufile_buf_register(void *base, size_t bytes);
void kvs__cufile_buf_deregister(void *base);
int kvs__cufile_handle_register(int fd, void **handle_out);
void kvs__cufile_handle_deregister(void *handle);

/* Synchronous transfers between a file and registered GPU memory
 * (base + base_off).  Return the bytes moved (a short count only at end of
 * file), or -(status) with status as above. */
ssize_t kvs__cufile_read(void *handle, void *base, size_t n, off_t file_off, off_t base_off);
ssize_t kvs__cufile_write(void *handle, const void *base, size_t n, off_t file_off,
                          off_t base_off);

#endif
