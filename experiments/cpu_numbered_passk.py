"""pass@1 / pass@8 / maj@8 of a policy (8 samples at temperature 0.8) on the first N problems of each
problem file in a directory: does sampling reach answers greedy misses (expert iteration's premise)?

    python experiments/cpu_numbered_passk.py PROBLEMS_DIR POLICY_HF_DIR OUT_DIR N
e.g. PROBLEMS_DIR = runs/<run>/problems/test (or a folder of links to some of its level files).
"""
import sys

from rstar_jax.config import GREEDY_STOP, EvalConfig, SamplerConfig, SamplingConfig
from rstar_jax.evaluation.run import evaluate

problems, policy, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cfg = EvalConfig(methods=("sample",), num_samples=8, ks=(1, 8),
                 sampling=SamplingConfig(temperature=0.8, max_new_tokens=320, stop=GREEDY_STOP),
                 batch_size=64, max_problems=n, exec_workers=2, exec_timeout_s=5.0, grade_workers=0, seed=0)
for row in evaluate(out, problems, policy, None, cfg, sampler=SamplerConfig(max_batch=64, max_len=512, chunk_tokens=16)):
    m = row["metrics"]
    print(f"{row['set']} ({row['problems']} problems): pass@1 {m['pass@1']:.1f}  pass@8 {m['pass@8']:.1f}  maj@8 {m['maj@8']:.1f}")
