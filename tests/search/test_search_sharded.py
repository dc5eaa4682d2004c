"""Trees sharded over 8 fake CPU devices (data 4 x fsdp 2) search exactly as on one device.
Runs in a subprocess: the device count is fixed when JAX starts."""

import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import jax
    import numpy as np
    from rstar_jax.config import MeshConfig, SearchConfig
    from rstar_jax.parallel.mesh import make_mesh
    from rstar_jax.search.tree import Tree
    from fake_search import run_fake_kernels

    assert jax.device_count() == 8
    mesh = make_mesh(MeshConfig(data=4, fsdp=2, tensor=1))
    config = SearchConfig.data_generation(3, num_rollouts=4, num_candidates=4)
    plain = run_fake_kernels(8, config, seed=1, capacity=64)
    sharded = run_fake_kernels(8, config, seed=1, capacity=64, mesh=mesh)
    assert len(sharded.visit_count.sharding.device_set) == 8, sharded.visit_count.sharding
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(sharded)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    try:
        Tree.init(6, 16, 2).shard(mesh)
    except ValueError as e:
        assert "do not split" in str(e)
    else:
        raise AssertionError("6 trees over 8 devices should fail")
    print("sharded ok")
""")


@pytest.mark.slow
def test_sharded_trees_match_single_device(on_eight_devices):
    proc = on_eight_devices(SCRIPT)
    assert proc.returncode == 0 and "sharded ok" in proc.stdout, proc.stderr[-3000:]
