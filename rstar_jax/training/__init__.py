"""Sharded training of the policy (SFT) and the process preference model (PPM).

Entry points, one call per run; a call in a workdir that already holds checkpoints resumes there:

    train_sft(workdir, *, base_model, train_file=None, plain_file=None, config=TrainConfig(),
              mesh=MeshConfig()) -> HF dir
    train_ppm(workdir, *, policy_model, train_file, config=TrainConfig(), mesh=MeshConfig(),
              ppm_config=PPMConfig()) -> PPM dir (HF backbone + value_head.safetensors)

(`rstar_jax.training.sft` and `rstar_jax.training.ppm`; CLI: `rstar-jax train-sft` / `train-ppm`.)
"""
