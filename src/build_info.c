/*
 * build_info.c - what this build of the library is: the git commit it was
 * built from (kvs_git_commit.h, written at every build by
 * cmake/git_commit.cmake) and the optional parts compiled in.
 */
#include "internal.h"
#include "kvs_git_commit.h"

unsigned kvs_build_features(void)
{
    unsigned f = 0;
#if defined(KVS_HAVE_CUDA) && KVS_HAVE_CUDA
    /* the cuFile path (io_cufile.c) is built with the CUDA one; libcufile
     * itself is opened at run time */
    f |= KVS_BUILD_CUDA | KVS_BUILD_CUFILE;
#endif
    return f;
}

const char *kvs_build_commit(void)
{
    return KVS_GIT_COMMIT;
}
