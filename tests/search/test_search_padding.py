"""A batch of trees that does not split over the mesh's data shards is padded with inert trees:
run_mcts / run_beam_search on a 4 x 2 mesh of 8 fake CPU devices give the trees of one device, and
the padding never reaches the policy, the executor or the PPM. Runs in a subprocess: the device
count is fixed when JAX starts."""

import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import jax
    import numpy as np
    from rstar_jax.config import MeshConfig, SearchConfig
    from rstar_jax.data.problems import Problem
    from rstar_jax.parallel.mesh import make_mesh
    from rstar_jax.search.beam import run_beam_search
    from rstar_jax.search.driver import run_mcts
    from rstar_jax.verify.executor import Executor
    from fake_text import FakePolicy, FakePPM

    assert jax.device_count() == 8
    mesh = make_mesh(MeshConfig(data=4, fsdp=2, tensor=1))
    # 7 problems in batches of 4: 4 and 3 trees, each padded to the 8 data shards.
    problems = [Problem(i, f"What is 3 + 4? (variant {i})", "7", "toy") for i in range(7)]
    mcts = SearchConfig.data_generation(3, num_rollouts=3, num_candidates=3, max_depth=4, batch_size=4)
    beam = SearchConfig.beam_search(num_candidates=3, beam_width=2, max_depth=3, batch_size=4)

    def run(search, config, mesh):
        policy, ppm = FakePolicy(), FakePPM()
        result = search(problems, policy, ppm, config, executor, mesh=mesh, progress=False)
        return result, policy.calls, ppm.calls

    with Executor(num_workers=1, timeout_s=5.0) as executor:
        for search, config in ((run_mcts, mcts), (run_beam_search, beam)):
            plain, policy_calls, ppm_calls = run(search, config, None)
            sharded, sharded_policy_calls, sharded_ppm_calls = run(search, config, mesh)
            assert len(sharded) == len(problems) and sharded.problems == plain.problems
            for name, a in plain.arrays.items():
                np.testing.assert_array_equal(sharded.arrays[name], a, err_msg=name)
            assert sharded.nodes == plain.nodes
            assert max(plain.num_nodes(b) for b in range(len(plain))) > 1
            # Padding trees never sample or score: the same prompts and texts, call by call.
            assert sharded_policy_calls == policy_calls and sharded_ppm_calls == ppm_calls
    print("padding ok")
""")


@pytest.mark.slow
def test_padded_batches_on_a_mesh_search_as_on_one_device(on_eight_devices):
    proc = on_eight_devices(SCRIPT)
    assert proc.returncode == 0 and "padding ok" in proc.stdout, proc.stderr[-3000:]


def test_padding_trees_are_inert():
    import numpy as np

    from rstar_jax.search import kernels
    from rstar_jax.search.tree import NO_NODE, Tree, padded_batch

    assert padded_batch(6, None) == 6
    tree = Tree.init(4, 16, 2, num_active=3)
    np.testing.assert_array_equal(np.asarray(tree.terminal[:, 0]), [False, False, False, True])
    _, leaves = kernels.select(tree, np.zeros((4, 1), np.int32))
    np.testing.assert_array_equal(np.asarray(leaves)[:, 0], [0, 0, 0, NO_NODE])
