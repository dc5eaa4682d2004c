"""The padded sizes that bound compiles: powers of two, and finer steps per doubling."""

from rstar_jax.shapes import bucket


def test_powers_of_two_with_a_minimum():
    assert [bucket(n) for n in (0, 1, 2, 3, 5, 64, 65)] == [1, 1, 2, 4, 8, 64, 128]
    assert bucket(3, minimum=16) == 16 and bucket(17, minimum=16) == 32


def test_two_sizes_per_doubling_pad_at_most_a_third():
    assert [bucket(n, 64, 2) for n in (10, 96, 97, 100, 136, 192, 193, 300)] == [
        64, 96, 128, 128, 192, 192, 256, 384]
    assert all(bucket(n, 1, 2) <= 1.5 * n for n in range(1, 5000))


def test_four_sizes_per_doubling():
    assert [bucket(n, per_doubling=4) for n in (129, 159, 160, 161, 192, 193, 256, 257)] == [
        160, 160, 160, 192, 192, 224, 256, 320]
    assert len({bucket(n, per_doubling=4) for n in range(129, 257)}) == 4
