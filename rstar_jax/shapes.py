"""Padded sizes: jit compiles a function once per input shape, so batch sizes, lengths and node
counts are rounded up to a few sizes per doubling, which bounds the compiles of a long run."""


def bucket(n: int, minimum: int = 1, per_doubling: int = 1) -> int:
    """The smallest of `per_doubling` (a power of two) evenly spaced sizes per doubling that is
    >= max(n, minimum, 1).

    Sizes in (p/2, p], p a power of two, are the multiples of p / (2 * per_doubling): powers of
    two for 1; 2^k and 3 * 2^(k-2) for 2 (padding at most a third of the result); eighths for 4.
    """
    n = max(n, minimum, 1)
    power = 1 << (n - 1).bit_length()
    step = max(1, power // (2 * per_doubling))
    return -(-n // step) * step
