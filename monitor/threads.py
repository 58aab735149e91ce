"""How many threads numerical code may use in this process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Keep BLAS (the tensor sketches' products) to the calling thread. OpenBLAS's own
    threads spin while they wait for work: beside register's digest workers they took a
    1 GB GGUF from 6.5 to 10 CPU-seconds (2 cores), and in two crawl workers on one
    machine they doubled the CPU per scanned document and halved the throughput. The
    products are small: one thread is also the fastest for them alone."""
    from threadpoolctl import threadpool_limits

    import fingerprints.tensors  # noqa: F401  (numpy, and so BLAS, loaded: then limited)

    with threadpool_limits(limits=1, user_api="blas"):
        yield
